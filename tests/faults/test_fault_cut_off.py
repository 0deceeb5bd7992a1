"""An agent cut off (frozen with SIGSTOP) past its worker timeout: the server's watchdog requeues
its task and another agent runs the next attempt. When the first agent comes back (SIGCONT) it
sees that a later attempt owns the task, stops its copy at once and reports nothing: the task's
status stays the later attempt's."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from tests.faults.reliability import alive, iter_records, kill_all, launch, stop
from tests.integration.daemon.support import create_task, task_doc, wait_final, wait_for

pytestmark = pytest.mark.slow

FAST = {"CONVEYOR_HEARTBEAT_INTERVAL": "0.5", "CONVEYOR_WORKER_TIMEOUT": "3"}
SCRIPT = textwrap.dedent(
    """
    import os, pathlib, sys, time
    if os.environ["CONVEYOR_ATTEMPT"] != "1":
        print("attempt 2 done", flush=True)
        sys.exit(0)
    print("attempt 1 running", flush=True)
    pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
    time.sleep(600)
    """
)


def test_cut_off_agent_stops_its_copy_and_leaves_the_later_attempt_alone(
    tmp_path: Path, agent_cache: Path
) -> None:
    with EmbeddedServer(tmp_path / "s.db", worker_timeout=3, watchdog_interval=0.5) as server:
        first = launch(server, tmp_path / "a", agent_cache, "cut", worker_id="cut-a", env=FAST)
        second = None
        pids: list[int] = []
        marker = tmp_path / "pid"
        task_id = create_task(
            server, "cut", {"diff": SCRIPT, "entry_point": f"t.py {marker}"}, "cut"
        )
        try:
            wait_for(lambda: marker.exists() and marker.read_text(), 60, "attempt 1 to run")
            pids = [int(marker.read_text())]
            second = launch(server, tmp_path / "b", agent_cache, "cut", worker_id="cut-b", env=FAST)
            first.signal(signal.SIGSTOP)  # cut off: alive, silent
            doc = wait_final(server, task_id, timeout=120)
            assert doc["status"] == "completed", doc.get("status_reason")
            assert doc["runtime"]["conveyor_attempt"] == 2
            assert alive(pids[0])  # attempt 1's process still runs under the frozen agent

            first.signal(signal.SIGCONT)
            wait_for(
                lambda: "attempt superseded" in first.log(), 60, "the first agent to stand down"
            )
            wait_for(lambda: not alive(pids[0]), 30, "attempt 1's process to be stopped")
            doc = task_doc(server, task_id)
            assert (doc["status"], doc["runtime"]["conveyor_attempt"]) == ("completed", 2)
            lines = [line for _, line in iter_records(server, task_id)]
            assert "attempt 2 done" in lines
            assert any(
                line.startswith("conveyor: attempt 1 ended: the task was requeued meanwhile")
                for line in lines
            ), lines
        finally:
            first.signal(signal.SIGCONT)
            for agent in (first, second):
                if agent is not None:
                    stop(agent)
            kill_all(pids)
