"""Load, reduced for CI: 4 agent processes x 40 tasks on one embedded server, each task run
exactly once (the full size is ``bench/load.py --agents 20 --tasks 1000``, docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import Timed, judge, markdown, run_load

pytestmark = pytest.mark.slow

AGENTS = 4
TASKS = 40


def test_every_task_completed_exactly_once(tmp_path: Path) -> None:
    result = run_load(AGENTS, TASKS, timeout=240, root=tmp_path / "load")
    summary = markdown(result)
    assert result.statuses == {"completed": TASKS}, summary
    assert result.not_final == 0, summary
    assert (result.ran_never, result.ran_twice) == (0, 0), summary
    assert (result.popped_never, result.popped_twice) == (0, 0), summary
    assert (result.started_never, result.started_twice, result.started_by_other) == (0, 0, 0)
    assert all(code == 0 for code in result.agent_exit_codes.values()), summary
    assert result.claim_calls >= TASKS
    assert 0 < result.claim_hit_ms["p99"] < 1000, summary  # measured, and not absurd
    assert result.passed


def test_the_verdict_sees_double_and_missing_runs(tmp_path: Path) -> None:
    ran = tmp_path / "ran.txt"
    ran.write_text("a\nb\nb\n")  # b ran twice, c never
    timed = [
        Timed("queues.get_next_task", 0.001, "w1", "a"),
        Timed("queues.get_next_task", 0.002, "w2", "b"),
        Timed("queues.get_next_task", 0.003, "w1", "b"),
        Timed("queues.get_next_task", 0.004, "w1", ""),
        Timed("tasks.started", 0.001, "w1", "a"),
        Timed("tasks.started", 0.001, "w1", "b"),
    ]
    verdict = judge(timed, ["a", "b", "c"], {"a": "completed", "b": "in_progress"}, ran)
    assert verdict["ran_never"] == 1 and verdict["ran_twice"] == 1
    assert verdict["popped_never"] == 1 and verdict["popped_twice"] == 1
    assert verdict["started_never"] == 1 and verdict["started_by_other"] == 1
    assert verdict["not_final"] == 2  # b in progress, c unknown to the server
    assert verdict["claim_calls"] == 4
    assert verdict["claim_hit_ms"]["max"] == pytest.approx(3.0)
