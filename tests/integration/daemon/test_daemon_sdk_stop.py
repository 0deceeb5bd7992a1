"""Stopping SDK scripts run by a real `conveyor daemon`: quickly, with an abort callback given
its time, and without overriding a final status set from outside (``Task.mark_failed()``).

Each script installs clearml 2.1.12 in its task venv (from uv's cache after the first test) and
attaches to its task with ``Task.init`` in remote mode.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, run_sdk, sdk_env
from tests.integration.daemon.support import (
    console_text,
    create_task,
    task_doc,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

QUEUE = "sdk-stop"
STOPPED_WITHIN_S = 3.0  # a bound, not a benchmark (bench/compare: "abort an SDK script")

RUNS_WITH_A_CHILD = """
import os, subprocess, sys, time
from clearml import Task
task = Task.init(project_name="stop", task_name="sdk")
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"PIDS {os.getpid()} {child.pid}", flush=True)
while True:
    time.sleep(0.1)
"""

WITH_CALLBACK = """
import pathlib, time
from clearml import Task
task = Task.init(project_name="stop", task_name="callback")

def on_abort():
    time.sleep(1)  # a checkpoint takes a moment: the agent must not kill it meanwhile
    pathlib.Path({marker!r}).write_text("saved")

task.register_abort_callback(on_abort, callback_execution_timeout=30)
print("READY", flush=True)
while True:
    time.sleep(0.1)
"""

JUST_RUNS = """
import time
from clearml import Task
task = Task.init(project_name="stop", task_name="marked failed")
print("READY", flush=True)
while True:
    time.sleep(0.1)
"""

MARK_FAILED = """
from clearml import Task
Task.get_task(task_id="{task}").mark_failed(status_reason="bad data", status_message="by hand")
print("RESULT {{}}")
"""


def start_sdk_task(server: EmbeddedServer, name: str, code: str) -> str:
    script = {
        "diff": textwrap.dedent(code),
        "entry_point": "run.py",
        "requirements": {"pip": "clearml==2.1.12"},
    }
    return create_task(server, name, script, queue=QUEUE)


def wait_console(
    server: EmbeddedServer, task_id: str, needle: str, timeout: float, ended_ok: bool = False
) -> str:
    def seen() -> str | None:
        text = console_text(server, task_id)
        if needle in text:
            return text
        ended = task_doc(server, task_id)["status"] in ("completed", "failed", "stopped")
        if ended and not ended_ok:
            raise AssertionError(f"task ended before printing {needle!r}:\n{text}")
        return None

    found: str = wait_for(seen, timeout, f"{needle!r} in the console", every=0.2)
    return found


def gone(procs: list[psutil.Process]) -> bool:
    def dead(proc: psutil.Process) -> bool:
        try:
            return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return all(dead(proc) for proc in procs)


def test_an_sdk_script_stops_at_once_child_included(
    embedded_server: EmbeddedServer, agent_factory: Any
) -> None:
    # The default grace: SIGKILL at its end would take 10 s, so a quick stop is the SDK's own.
    agent_factory(queue=QUEUE, env={"CONVEYOR_ABORT_GRACE": "10"})
    task_id = start_sdk_task(embedded_server, "stop quickly", RUNS_WITH_A_CHILD)
    text = wait_console(embedded_server, task_id, "PIDS ", timeout=300)
    line = next(x for x in text.splitlines() if x.startswith("PIDS "))
    procs = [psutil.Process(int(pid)) for pid in line.split()[1:]]

    started = time.monotonic()
    api_call(embedded_server, "tasks.stop", {"task": task_id})
    wait_for(lambda: gone(procs), 30, "the task's processes to end", every=0.05)
    took = time.monotonic() - started

    doc = wait_final(embedded_server, task_id, timeout=30)
    assert doc["status"] == "stopped", (
        doc.get("status_reason"),
        console_text(embedded_server, task_id),
    )
    assert took <= STOPPED_WITHIN_S, f"the SDK script took {took:.1f} s to stop"


def test_an_abort_callback_gets_its_time(
    embedded_server: EmbeddedServer, agent_factory: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "checkpoint.txt"
    agent_factory(queue=QUEUE)
    task_id = start_sdk_task(embedded_server, "callback", WITH_CALLBACK.format(marker=str(marker)))
    wait_console(embedded_server, task_id, "READY", timeout=300)

    api_call(embedded_server, "tasks.stop", {"task": task_id})
    # The SDK polls its own status every 15 s, then runs the callback (1 s here).
    doc = wait_final(embedded_server, task_id, timeout=90)

    text = console_text(embedded_server, task_id)
    assert doc["status"] == "stopped", (doc.get("status_reason"), text)
    assert marker.read_text() == "saved"
    assert "waiting up to 45 s for the task's abort callback" in text
    assert "the task's abort callback completed" in text


def test_a_task_marked_failed_from_outside_stays_failed(
    embedded_server: EmbeddedServer, agent_factory: Any
) -> None:
    agent_factory(queue=QUEUE)
    task_id = start_sdk_task(embedded_server, "marked failed", JUST_RUNS)
    wait_console(embedded_server, task_id, "READY", timeout=300)

    proc = run_sdk(MARK_FAILED.format(task=task_id), sdk_env(embedded_server))
    assert proc.returncode == 0, proc.stderr
    line = "conveyor: task was marked failed from outside; process stopped"
    text = wait_console(embedded_server, task_id, line, timeout=60, ended_ok=True)

    doc = task_doc(embedded_server, task_id)
    assert (doc["status"], doc["status_reason"]) == ("failed", "bad data"), text
    assert "task stopped" not in text
