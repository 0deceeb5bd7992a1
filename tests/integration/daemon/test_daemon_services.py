"""`conveyor daemon --services-mode N`: up to N tasks at once, each its own process and worker,
the next one waits for a free place; workers are retired once their task ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import create_task, task_doc, wait_final, wait_for

# Runs until its release file exists (a controller waiting on its steps), at most a minute.
HOLD = """
import os, sys, time
release = sys.argv[1]
for _ in range(600):
    if os.path.exists(release):
        break
    time.sleep(0.1)
print("released", os.getpid())
"""


def running(server: EmbeddedServer, ids: list[str]) -> list[str]:
    return [t for t in ids if task_doc(server, t)["status"] == "in_progress"]


def service_workers(server: EmbeddedServer) -> list[str]:
    workers = api_call(server, "workers.get_all", {})["workers"]
    return sorted(w["id"] for w in workers if w["id"].startswith("test-agent-svc"))


def test_services_mode_caps_and_retires(
    embedded_server: EmbeddedServer, agent_factory: Any, tmp_path: Path
) -> None:
    agent_factory("--services-mode", "2", queue="svc")
    release = tmp_path / "release"
    script = {"diff": HOLD, "entry_point": f"hold.py {release}"}
    ids = [create_task(embedded_server, f"controller {i}", script, queue="svc") for i in range(3)]
    wait_for(lambda: len(running(embedded_server, ids)) == 2, 120, "two controllers at once")
    # The third waits for a place: the cap holds while the first two run.
    assert task_doc(embedded_server, ids[2])["status"] == "queued"
    assert service_workers(embedded_server) == ["test-agent-svc", "test-agent-svc:1"]
    release.write_text("go")
    for task_id in ids:
        assert wait_final(embedded_server, task_id, timeout=120)["status"] == "completed"
    wait_for(
        lambda: service_workers(embedded_server) == ["test-agent-svc"], 60, "spare workers retired"
    )
