"""LogShipper against the real embedded server: order, outages, restarts, leftovers, full disk."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.api.client import ApiClient
from agent.server.embedded import EmbeddedServer
from agent.supervise.logs import LogShipper, TaskConsole, deliver_leftover_spools
from agent.supervise.process import run_process
from agent.supervise.spool import SpoolError

WAIT = 30.0


def client_for(server: EmbeddedServer, retry_for: float | None = 10.0) -> ApiClient:
    creds = server.credentials
    return ApiClient(
        server.url, creds.access_key, creds.secret_key, worker_id="box:0", retry_for=retry_for
    )


@pytest.fixture
async def api(embedded_server: EmbeddedServer) -> AsyncIterator[ApiClient]:
    async with client_for(embedded_server) as client:
        yield client


async def lines_on_server(api: ApiClient, task_id: str) -> list[tuple[str, str]]:
    """Every console line of the task as ``(level, line)``, in server order."""
    events = await api.get_task_log(task_id, last=10_000)
    return [(e["level"], line) for e in events for line in e["msg"].split("\n")]


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_lines_arrive_in_order_with_levels(api: ApiClient, tmp_path: Path) -> None:
    task_id = await api.create_task("logs")
    expected = [("error" if i % 7 == 0 else "info", f"line {i}") for i in range(2000)]
    spool_dir = tmp_path / "spool"
    async with LogShipper(api.with_retry_for(None), task_id, "box:0", spool_dir) as shipper:
        for level, line in expected:
            shipper.write(line, level)
    assert await lines_on_server(api, task_id) == expected
    assert list(spool_dir.iterdir()) == []  # delivered spools are removed
    events = await api.get_task_log(task_id, last=10_000)
    runs = 1 + sum(a[0] != b[0] for a, b in itertools.pairwise(expected))
    assert runs <= len(events) <= runs + 2000 // 500 + 1  # one event per level run and batch
    assert all(e["worker"] == "box:0" for e in events)


async def test_writes_from_threads_and_task_console(api: ApiClient, tmp_path: Path) -> None:
    task_id = await api.create_task("console")
    async with LogShipper(api, task_id, "box:0", tmp_path / "spool") as shipper:
        console = TaskConsole(shipper)

        def stage(n: int) -> None:
            for i in range(100):
                shipper.write(f"thread {n} line {i}")

        await asyncio.gather(*(asyncio.to_thread(stage, n) for n in range(4)))
        console.info("cloning (cache hit)")
        console.error("requirements failed")
    got = await lines_on_server(api, task_id)
    for n in range(4):
        mine = [line for _, line in got if line.startswith(f"thread {n} ")]
        assert mine == [f"thread {n} line {i}" for i in range(100)]
    assert got[-2:] == [
        ("info", "conveyor: cloning (cache hit)"),
        ("error", "conveyor: requirements failed"),
    ]


async def test_a_process_output_reaches_the_server(api: ApiClient, tmp_path: Path) -> None:
    task_id = await api.create_task("process")
    script = "import sys\nfor i in range(50):\n    print(i)\nprint('bad', file=sys.stderr)\n"
    async with LogShipper(api, task_id, "box:0", tmp_path / "spool") as shipper:
        exit_info = await run_process(
            [sys.executable, "-u", "-c", script],
            cwd=tmp_path,
            env=dict(os.environ),
            sink=shipper,
        )
    assert exit_info.returncode == 0
    got = await lines_on_server(api, task_id)
    assert [line for level, line in got if level == "info"] == [str(i) for i in range(50)]
    assert ("error", "bad") in got


async def test_server_restart_mid_stream_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    spool_dir = tmp_path / "spool"
    server = EmbeddedServer(db)
    server.start()
    port = server.port
    api = client_for(server, retry_for=None)
    try:
        task_id = await api.create_task("restart")
        expected = [f"line {i}" for i in range(1500)]
        async with LogShipper(api, task_id, "box:0", spool_dir) as shipper:
            for line in expected[:500]:
                shipper.write(line)
            await until(lambda: shipper.delivered_lines >= 500, "first 500 lines delivered")
            with capture_logs() as logs:
                server.stop()
                for line in expected[500:1000]:
                    shipper.write(line)
                await until(
                    lambda: any(e["event"] == "api call retrying" for e in logs),
                    "the shipper to hit the outage",
                )
            assert shipper.delivered_lines == 500
            server = EmbeddedServer(db, port=port)
            server.start()
            for line in expected[1000:]:
                shipper.write(line)
        assert [line for _, line in await lines_on_server(api, task_id)] == expected
    finally:
        await api.aclose()
        server.stop()


async def test_unacknowledged_lines_are_sent_at_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    spool_dir = tmp_path / "spool"
    server = EmbeddedServer(db)
    server.start()
    port = server.port
    api = client_for(server, retry_for=None)
    try:
        task_id = await api.create_task("leftover")
        shipper = LogShipper(api, task_id, "box:0", spool_dir)
        await shipper.start()
        for i in range(10):
            shipper.write(f"before {i}")
        await until(lambda: shipper.delivered_lines >= 10, "first lines delivered")
        server.stop()
        for i in range(5):
            shipper.write(f"during outage {i}")
        assert await shipper.close(timeout=0.5) is False  # the agent stops; the spool stays
        assert (spool_dir / f"{task_id}.jsonl").exists()

        server = EmbeddedServer(db, port=port)
        server.start()
        assert await deliver_leftover_spools(spool_dir, api, timeout=WAIT) == 1
        got = [line for _, line in await lines_on_server(api, task_id)]
        assert got == [f"before {i}" for i in range(10)] + [f"during outage {i}" for i in range(5)]
        assert list(spool_dir.iterdir()) == []
        assert await deliver_leftover_spools(spool_dir, api) == 0
    finally:
        await api.aclose()
        server.stop()


async def test_full_disk_raises_once_and_still_ships_from_memory(
    api: ApiClient, tmp_path: Path
) -> None:
    task_id = await api.create_task("disk full")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / f"{task_id}.jsonl").symlink_to("/dev/full")
    shipper = LogShipper(api, task_id, "box:0", spool_dir)
    with pytest.raises(SpoolError, match="No space left"):
        await shipper.start()  # opening works; the first write fails
        shipper.write("first")
    shipper.write("second")  # no second exception: the pipeline already knows
    TaskConsole(shipper).error("agent could not spool the task's log")
    assert await shipper.close(timeout=WAIT)
    got = [line for _, line in await lines_on_server(api, task_id)]
    assert got == ["first", "second", "conveyor: agent could not spool the task's log"]


async def test_close_without_server_keeps_the_spool_and_returns(tmp_path: Path) -> None:
    async with ApiClient("http://127.0.0.1:9", "k", "s", retry_for=None) as dead:
        shipper = LogShipper(dead, "t-offline", "box:0", tmp_path)
        await shipper.start()
        shipper.write("kept for later")
        started = time.monotonic()
        assert await shipper.close(timeout=0.5) is False
        assert time.monotonic() - started < 5
    assert (tmp_path / "t-offline.jsonl").read_text().count("kept for later") == 1
