"""The chaos soak, short (about 2 minutes, fixed seed): agents and the server killed and started
again at random while tasks print numbered lines; every promise holds (bench/chaos.py has the
full size, docs/reliability.md its figures). Plus the verdict seeing what it must see."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.chaos import run_soak
from bench.chaos_verdict import Expected, judge_task, overlapping, trace_spans

pytestmark = pytest.mark.slow


def test_short_chaos_soak_keeps_every_promise(tmp_path: Path) -> None:
    result = asyncio.run(
        run_soak(
            tmp_path / "chaos",
            agents=2,
            tasks=12,
            duration=75,
            lines=60,
            seed=7,
            gap=(5, 10),
            final_timeout=300,
        )
    )
    assert result["passed"], result["table"]
    faults = result["summary"]["faults"]
    assert "SIGKILL" in faults, result["table"]  # faults were injected, not a quiet run
    statuses = result["summary"]["final statuses"]
    assert statuses == "completed: 10, failed: 2", result["table"]


def _lines(attempt: int, numbers: range | list[int]) -> list[str]:
    return [f"chaos a{attempt} {i:04d}" for i in numbers]


def _doc(status: str = "completed", attempt: int = 2, reason: str = "") -> dict[str, object]:
    runtime = {"conveyor_attempt": attempt}
    return {"id": "t", "status": status, "status_reason": reason, "runtime": runtime}


def test_the_verdict_passes_a_retried_task_with_a_cut_first_attempt() -> None:
    console = [*_lines(1, range(4)), "conveyor: attempt 1 lost: ...", *_lines(2, range(10))]
    trace = ["a1 0 10.0", "a1 3 11.0", "a2 0 12.0", "a2 9 13.0"]
    verdict = judge_task(_doc(), "t", Expected(10, 0), console, trace, 3)
    assert verdict.ok, verdict.problems
    assert verdict.last_lines == "10/10"


@pytest.mark.parametrize(
    ("doc", "console", "trace", "problem"),
    [
        (_doc("failed", reason="lost worker"), _lines(2, range(10)), [], "status 'failed'"),
        (_doc(attempt=4), _lines(4, range(10)), [], "beyond the cap of 3"),
        (_doc(), _lines(2, [0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9]), [], "not 0..9 once in order"),
        (_doc(), _lines(2, range(9)), [], "not 0..9 once in order"),
        (_doc(), [*_lines(1, [0, 2]), *_lines(2, range(10))], [], "attempt 1's lines doubled"),
        (_doc(), _lines(2, range(10)), ["a1 0 10.0", "a2 0 10.5", "a1 5 11.0"], "same time"),
        (_doc(), [*_lines(2, range(10)), *_lines(3, [0])], [], "after the task's last attempt"),
    ],
)
def test_the_verdict_sees_broken_promises(
    doc: dict[str, object], console: list[str], trace: list[str], problem: str
) -> None:
    verdict = judge_task(doc, "t", Expected(10, 0), console, trace, 3)
    assert any(problem in p for p in verdict.problems), verdict.problems


def test_a_task_meant_to_fail_must_fail_with_its_exit_code() -> None:
    lines = _lines(1, range(10))
    good = judge_task(_doc("failed", 1, "exit code 3"), "t", Expected(10, 3), lines, [], 3)
    assert good.ok, good.problems
    other = judge_task(_doc("failed", 1, "lost worker"), "t", Expected(10, 3), lines, [], 3)
    assert not other.ok


def test_overlap_is_seen_from_the_traces() -> None:
    spans = trace_spans(["a1 0 1.0", "a1 9 5.0", "a2 0 6.0", "a2 9 9.0", "junk"])
    assert spans == {1: (1.0, 5.0), 2: (6.0, 9.0)}
    assert overlapping(spans) == []
    assert overlapping({1: (1.0, 5.0), 2: (4.0, 9.0)}) == [(1, 2)]
