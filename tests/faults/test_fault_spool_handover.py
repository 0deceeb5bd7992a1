"""A requeued task comes back to the agent whose previous run left its log spool behind.

The agent delivers leftover spools in the background at start-up while it already claims
tasks; the watchdog puts a lost task at the front of its queue, so the same agent can claim
it while the leftover of that very task is still being delivered (slow or absent server). The
new run must neither fail ("log spool in use") nor lose the old lines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.api.client import ApiClient
from agent.server.embedded import EmbeddedServer
from agent.supervise.logs import LogShipper, deliver_leftover_spools

WAIT = 30.0


def _client(url: str, key: str, secret: str, retry_for: float | None) -> ApiClient:
    return ApiClient(url, key, secret, worker_id="box", retry_for=retry_for)


async def test_new_run_while_the_leftover_spool_is_being_delivered(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    creds = embedded_server.credentials
    spool_dir = tmp_path / "spool"
    async with _client(embedded_server.url, creds.access_key, creds.secret_key, 10.0) as api:
        task_id = await api.create_task("requeued")
        # The first run's lines stay in the spool (its agent never reached the server).
        async with _client("http://127.0.0.1:9", "k", "s", None) as dead:
            first = LogShipper(dead, task_id, "box", spool_dir)
            await first.start()
            for i in range(50):
                first.write(f"first run {i}")
            assert await first.close(timeout=0.2) is False
            # The next start delivers it in the background: stuck while its server is away.
            leftover = asyncio.create_task(deliver_leftover_spools(spool_dir, dead))
            await asyncio.sleep(0.3)  # let it open the spool (no event to await in between)
            assert not leftover.done()
            try:
                async with LogShipper(api.with_retry_for(None), task_id, "box", spool_dir) as new:
                    for i in range(50):
                        new.write(f"second run {i}")
            finally:
                leftover.cancel()
                await asyncio.gather(leftover, return_exceptions=True)
        assert await deliver_leftover_spools(spool_dir, api, timeout=WAIT) == 1
        events = await api.get_task_log(task_id, last=10_000)
        lines = [line for e in events for line in e["msg"].split("\n")]
        expected = [f"first run {i}" for i in range(50)] + [f"second run {i}" for i in range(50)]
        assert lines == expected
        assert list(spool_dir.iterdir()) == []
