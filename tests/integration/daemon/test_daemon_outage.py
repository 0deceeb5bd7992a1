"""The server goes away mid-task and comes back: no console line and no status is lost."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from agent.server.embedded import EmbeddedServer
from tests.integration.daemon.support import (
    console_text,
    create_task,
    start_agent,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

CHATTY = textwrap.dedent(
    """
    import pathlib, sys, time
    for i in range(400):
        print(f"line {i:04d}", flush=True)
        if i == 100:
            pathlib.Path(sys.argv[1]).touch()
        time.sleep(0.01)
    """
)


def test_server_restart_mid_task_loses_nothing(
    tmp_path: Path, agent_cache: Path, request: Any
) -> None:
    db = tmp_path / "server.db"
    server = EmbeddedServer(db)
    server.start()
    port = urlparse(server.url).port
    assert port is not None
    agent = start_agent(server, tmp_path / "agent", agent_cache, "outage")
    marker = tmp_path / "halfway"
    task_id = create_task(
        server, "chatty", {"diff": CHATTY, "entry_point": f"chatty.py {marker}"}, queue="outage"
    )
    try:
        wait_for(marker.exists, 60, "the task to be halfway")
        server.stop()  # the control plane dies while the task prints
        wait_for(lambda: "api call retrying" in agent.log() or agent.process.poll(), 30,
                 "the agent to notice the outage")  # fmt: skip
        server = EmbeddedServer(db, port=port, credentials=server.credentials)
        server.start()
        doc = wait_final(server, task_id, timeout=120)
        assert doc["status"] == "completed", doc.get("status_reason")
        lines = [ln for ln in console_text(server, task_id).splitlines() if ln.startswith("line ")]
        assert lines == [f"line {i:04d}" for i in range(400)]
    finally:
        agent.stop()
        agent.wait(60)
        server.stop()
