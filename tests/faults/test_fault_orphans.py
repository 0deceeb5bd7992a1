"""Which processes a starting agent kills: only those of tasks whose agent is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.supervise.spool import Spool, leftover_spool_files, spool_name
from agent.supervise.tree import MARKER_VAR, TASK_VAR, kill_orphans, new_marker, owner_gone
from agent.worker.policy import is_own_worker

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_owner_gone() -> None:
    assert not owner_gone(new_marker())  # this process: alive
    assert owner_gone(f"{_dead_pid()}-123.ab12")
    assert owner_gone(f"{os.getpid()}-1.ab12")  # same pid, other start time: a reused pid
    assert not owner_gone("0123456789abcdef")  # an older agent's marker: not judged
    assert not owner_gone("")


def test_kill_orphans_spares_tasks_of_live_agents() -> None:
    markers = {
        "orphan": f"{_dead_pid()}-123.ab12",
        "ours": new_marker(),
        "old format": "0123456789abcdef",
    }
    procs = {
        name: subprocess.Popen(SLEEPER, env={**os.environ, MARKER_VAR: m, TASK_VAR: f"t-{name}"})
        for name, m in markers.items()
    }
    try:
        orphans = kill_orphans(grace=5)
        assert (procs["orphan"].pid, "t-orphan") in {(o.pid, o.task_id) for o in orphans}
        assert procs["orphan"].wait(5) is not None
        assert procs["ours"].poll() is None
        assert procs["old format"].poll() is None
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(5)


def test_is_own_worker() -> None:
    assert is_own_worker("box:gpu1", "box:gpu1")
    assert is_own_worker("box:gpu1:0", "box:gpu1")
    assert is_own_worker("box:gpu1:12", "box:gpu1")
    assert not is_own_worker("box:gpu10:0", "box:gpu1")
    assert not is_own_worker("box:gpu1:x", "box:gpu1")
    assert not is_own_worker("other", "box:gpu1")
    assert not is_own_worker("", "box:gpu1")


def test_leftover_spools_of_one_task_come_oldest_run_first(tmp_path: Path) -> None:
    for generation in (2, 0, 1, 10):
        spool = Spool(tmp_path, "task", spool_name("task", generation))
        spool.open("box")
        spool.append(1.0, "info", [f"run {generation}"])
        spool.release()
    left = leftover_spool_files(tmp_path)
    assert [x.name for x in left] == ["task", "task.1", "task.2", "task.10"]
    assert {x.task_id for x in left} == {"task"}
