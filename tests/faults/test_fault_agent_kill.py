"""An agent killed with SIGKILL mid-task, then started again: nothing is lost, nothing is left.

- the task's processes (a setsid escapee included) outlive the killed agent; the next start
  of an agent on the machine kills them before it claims anything;
- the task never stays ``in_progress``, and gets the same answer however fast the agent comes
  back: the server's watchdog requeues it when the agent stays away longer than the worker
  timeout, and an agent that comes back sooner (same worker id) requeues it itself (the retry
  policy, agent/retry.py), with a closing line on the lost attempt's console;
- console lines the killed agent had spooled but not delivered are delivered by its next start.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import pytest

from agent.server.embedded import EmbeddedServer
from tests.faults.reliability import alive, iter_records, kill_all, launch, stop, task_records
from tests.helpers import result_of, run_sdk, sdk_env
from tests.integration.daemon.support import (
    CONVEYOR,
    agent_env,
    create_task,
    task_doc,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

WORKER_TIMEOUT = 5.0  # the server forgets a silent agent after this long (tests only)
FAST = {"CONVEYOR_HEARTBEAT_INTERVAL": "0.5"}  # well inside the worker timeout

# First run: an escapee child, 100 lines, wait for the test's go, 100 more lines, then hang.
# A later run (the task requeued) says whether the first run's processes were still there.
TWO_RUNS = textwrap.dedent(
    """
    import os, pathlib, subprocess, sys, time
    state, go, printed = (pathlib.Path(p) for p in sys.argv[1:4])

    def alive(pid):
        try:
            return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except OSError:
            return False

    if state.exists():
        pids = [int(p) for p in state.read_text().split()]
        print(f"second run; first run alive: {[p for p in pids if alive(p)]}", flush=True)
        sys.exit(0)
    kid = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])
    for i in range(100):
        print(f"line {i:03d}", flush=True)
    state.write_text(f"{os.getpid()} {kid.pid}")
    while not go.exists():
        time.sleep(0.02)
    for i in range(100, 200):
        print(f"line {i:03d}", flush=True)
    printed.touch()
    time.sleep(600)
    """
)

HANG = textwrap.dedent(
    """
    import os, pathlib, subprocess, sys, time
    if os.environ["CONVEYOR_ATTEMPT"] != "1":
        print(f"attempt {os.environ['CONVEYOR_ATTEMPT']} runs to the end", flush=True)
        sys.exit(0)
    kid = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])
    print("hanging", flush=True)
    pathlib.Path(sys.argv[1]).write_text(f"{os.getpid()} {kid.pid}")
    time.sleep(600)
    """
)


READ_BACK = """
import json
from clearml import Task
task = Task.get_task(task_id="{task}")
print("RESULT " + json.dumps({{"console": task.get_reported_console_output(100)}}))
"""


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def _restart(server: EmbeddedServer, db: Path, port: int) -> EmbeddedServer:
    again = EmbeddedServer(
        db,
        port=port,
        credentials=server.credentials,
        worker_timeout=WORKER_TIMEOUT,
        watchdog_interval=0.5,
    )
    again.start()
    return again


def test_killed_agent_task_requeued_orphans_killed_spool_delivered(
    tmp_path: Path, agent_cache: Path
) -> None:
    db = tmp_path / "server.db"
    server = EmbeddedServer(db, worker_timeout=WORKER_TIMEOUT, watchdog_interval=0.5)
    server.start()
    port = urlparse(server.url).port
    assert port is not None
    data_dir = tmp_path / "agent"
    first = launch(server, data_dir, agent_cache, "kill", env=FAST)
    second = None
    orphans: list[int] = []
    state, go, printed = tmp_path / "state", tmp_path / "go", tmp_path / "printed"
    entry = f"two_runs.py {state} {go} {printed}"
    task_id = create_task(server, "two runs", {"diff": TWO_RUNS, "entry_point": entry}, "kill")
    spool = data_dir / "spool" / f"{task_id}.jsonl"
    try:
        wait_for(state.exists, 60, "the first run to start")
        orphans = _pids(state)
        # The control plane goes away: lines 100-199 can only be spooled, not delivered.
        server.stop()
        go.touch()
        wait_for(printed.exists, 30, "the second hundred lines")
        wait_for(lambda: '"line 199"' in spool.read_text(), 30, "line 199 in the agent's spool")
        first.signal(signal.SIGKILL)
        first.wait(10)
        assert all(alive(p) for p in orphans), "the task's processes outlive a SIGKILLed agent"

        server = _restart(server, db, port)
        doc = wait_for(
            lambda: (d := task_doc(server, task_id))["status"] == "queued" and d,
            30,
            "the watchdog to requeue the lost worker's task",
        )
        assert doc["status_reason"] == "lost worker"
        delivered = task_records(server, task_id)
        assert "line 199" not in delivered  # still only in the dead agent's spool

        second = launch(server, data_dir, agent_cache, "kill", env=FAST, log_name="agent-2.log")
        doc = wait_final(server, task_id, timeout=120)
        assert doc["status"] == "completed", doc.get("status_reason")
        records = task_records(server, task_id)
        lines = [r for r in records if r.startswith("line ")]
        assert lines == [f"line {i:03d}" for i in range(200)]  # all, once each, in order
        assert "second run; first run alive: []" in records
        assert not any(alive(p) for p in orphans)
        assert "orphaned task processes killed" in second.log()
        assert not spool.exists()
    finally:
        for agent in (first, second):
            if agent is not None:
                stop(agent)
        server.stop()
        kill_all(orphans)


def test_agent_back_before_the_watchdog_requeues_the_lost_task_and_serves_on(
    tmp_path: Path, agent_cache: Path
) -> None:
    with EmbeddedServer(tmp_path / "server.db") as server:  # default timeout: no watchdog help
        data_dir = tmp_path / "agent"
        first = launch(server, data_dir, agent_cache, "back")
        second = None
        orphans: list[int] = []
        pids_file = tmp_path / "pids"
        task_id = create_task(
            server, "hang", {"diff": HANG, "entry_point": f"hang.py {pids_file}"}, "back"
        )
        try:
            wait_for(lambda: pids_file.exists() and pids_file.read_text(), 60, "the task")
            orphans = _pids(pids_file)
            # the line must have left the pipe before the kill, or nobody can deliver it
            wait_for(lambda: "hanging" in task_records(server, task_id), 30, "its line")
            first.signal(signal.SIGKILL)
            first.wait(10)
            second = launch(server, data_dir, agent_cache, "back", log_name="agent-2.log")
            doc = wait_final(server, task_id, timeout=120)
            assert doc["status"] == "completed", doc.get("status_reason")
            assert doc["runtime"]["conveyor_attempt"] == 2
            assert not any(alive(p) for p in orphans)
            records = [line for _, line in iter_records(server, task_id)]
            lost = (
                "conveyor: attempt 1 lost: the agent restarted while running it; "
                "requeued (attempt 2 of 3)"
            )
            # the lost attempt's lines kept, its closing line, then the next attempt's header
            story = ["conveyor: attempt 1 of 3", "hanging", lost, "conveyor: attempt 2 of 3"]
            assert [r for r in records if r in story] == story
            assert "attempt 2 runs to the end" in records
            # the readers users have tell the same story: the SDK's and `conveyor logs`
            sdk = result_of(run_sdk(READ_BACK.format(task=task_id), sdk_env(server)))["console"]
            assert lost in "\n".join(sdk) and "attempt 2 runs to the end" in "\n".join(sdk)
            env = agent_env(server, tmp_path / "cli", agent_cache, "cli")
            shown = subprocess.run(
                [str(CONVEYOR), "logs", task_id], env=env, capture_output=True, text=True,
                timeout=120, check=False,
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert shown.stdout.index(lost) < shown.stdout.index("attempt 2 runs to the end")
            after = create_task(server, "after", {"diff": "print('next')\n"}, "back")
            assert wait_final(server, after, timeout=60)["status"] == "completed"
        finally:
            for agent in (first, second):
                if agent is not None:
                    stop(agent)
            kill_all(orphans)
