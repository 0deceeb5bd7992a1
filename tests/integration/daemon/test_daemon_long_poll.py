"""The daemon's idle wait, in-process against the real embedded server over HTTP: a long poll
picks up a task at once although polling is set to every 10 minutes; a server without the
endpoint gets polled instead; a stop cuts the long poll short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from structlog.testing import capture_logs

from agent.api.client import ApiClient
from agent.config.settings import Settings
from agent.pipeline.report import Outcome
from agent.server.embedded import EmbeddedServer
from agent.worker.daemon import Daemon, ExitCode
from agent.worker.policy import Slot

WAIT = 30.0  # every wait in these tests gives up after this long


class Runner:
    """A task runner that only records what it was given."""

    def __init__(self) -> None:
        self.ran: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, slot: Slot, task_id: str, shutdown: asyncio.Event) -> Outcome:
        await self.ran.put(task_id)
        return Outcome.completed()


class CountingClient(ApiClient):
    """The agent's client, counting its long polls and claims."""

    waits = claims = 0

    async def wait_for_entries(self, queue_ids: Sequence[str], timeout: float) -> list[str]:
        self.waits += 1
        return await super().wait_for_entries(queue_ids, timeout)

    async def get_next_task(self, queue_id: str, worker: str = "") -> str | None:
        self.claims += 1
        return await super().get_next_task(queue_id, worker)


class NoLongPollClient(CountingClient):
    """What a server without Conveyor's long poll (ClearML's) answers: the real embedded
    server's reply to an endpoint it does not have."""

    async def wait_for_entries(self, queue_ids: Sequence[str], timeout: float) -> list[str]:
        self.waits += 1
        await self.call("queues.wait_for_entries_missing", {"queues": list(queue_ids)})
        raise AssertionError("the server answered an unknown endpoint")


def settings(
    server: EmbeddedServer, tmp_path: Path, interval: float, wait: float = 20.0
) -> Settings:
    creds = server.credentials
    return Settings(
        api_host=server.url,
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        worker_id="long-poll-agent",
        queues=("lp",),
        poll_min_interval=interval,
        poll_max_interval=interval,
        poll_wait=wait,
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
    )


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def serve_one_task(api: ApiClient, config: Settings, idle: Callable[[], bool]) -> None:
    """Run a daemon until it is ``idle``, then enqueue a task: it must run it."""
    runner = Runner()
    daemon = Daemon(config, api, runner)
    running = asyncio.create_task(daemon.run())
    try:
        await until(idle)
        task_id = await api.create_task("picked up")
        await api.enqueue(task_id, await api.queue_id("lp"))
        assert await asyncio.wait_for(runner.ran.get(), WAIT) == task_id
    finally:
        daemon.stopping.set()
        assert await asyncio.wait_for(running, WAIT) == ExitCode.OK


async def test_an_idle_agent_long_polls_and_starts_a_task_at_once(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    config = settings(embedded_server, tmp_path, interval=600.0)  # polling alone: 10 minutes
    creds = embedded_server.credentials
    async with ApiClient(embedded_server.url, creds.access_key, creds.secret_key) as api:
        await api.create_queue("lp")
        # idle: the agent waits inside the server, not between polls
        await serve_one_task(api, config, lambda: len(embedded_server.state.queue_waiters) == 1)
    assert len(embedded_server.state.queue_waiters) == 0  # the stop ended the long poll


async def test_without_the_endpoint_the_agent_polls(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    config = settings(embedded_server, tmp_path, interval=0.2)
    creds = embedded_server.credentials
    client = NoLongPollClient(embedded_server.url, creds.access_key, creds.secret_key)
    async with client as api:
        await api.create_queue("lp")
        with capture_logs() as logs:
            await serve_one_task(api, config, lambda: client.claims >= 5)
    assert client.waits == 1  # asked once, then polled
    [told] = [e for e in logs if e["event"] == "the server has no long poll; polling"]
    assert told["interval"] == 0.2


async def test_long_polls_that_run_out_empty_are_not_followed_by_claims(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    config = settings(embedded_server, tmp_path, interval=600.0, wait=0.2)
    creds = embedded_server.credentials
    client = CountingClient(embedded_server.url, creds.access_key, creds.secret_key)
    async with client as api:
        await api.create_queue("lp")
        claims_while_idle: list[int] = []

        def idle_a_while() -> bool:
            claims_while_idle.append(client.claims)
            return client.waits >= 5

        await serve_one_task(api, config, idle_a_while)
    assert claims_while_idle[-1] == 1  # the first round only: five empty waits, no claims
