"""The watchdog's pure decision: the retry policy's requeue or fail, or leave alone."""

from __future__ import annotations

from typing import Any

from agent.server.watchdog import Outcome, decide


def _task(
    status: str = "in_progress", worker: str = "w1", attempt: int | None = None, **params: str
) -> dict[str, Any]:
    runtime = {} if attempt is None else {"conveyor_attempt": attempt}
    hyperparams = {"Conveyor": {k: {"value": v} for k, v in params.items()}}
    return {
        "id": "t",
        "status": status,
        "last_worker": worker,
        "runtime": runtime,
        "hyperparams": hyperparams,
    }


def test_requeue_until_the_cap_then_fail() -> None:
    first = decide("w1", _task(), has_queue=True, default_retries=2)
    assert (first.outcome, first.next_attempt) == (Outcome.REQUEUE, 2)
    assert first.message == "lost worker: requeued (attempt 2 of 3)"
    assert first.console.startswith("attempt 1 lost: its agent stopped reporting")
    assert decide("w1", _task(attempt=2), True, 2).outcome is Outcome.REQUEUE
    failed = decide("w1", _task(attempt=3), True, 2)
    assert failed.outcome is Outcome.FAIL
    assert failed.reason == "lost worker"
    assert "no retries left" in failed.message


def test_the_task_cap_wins_over_the_server_default() -> None:
    assert decide("w1", _task(attempt=3, max_retries="5"), True, 2).outcome is Outcome.REQUEUE
    assert decide("w1", _task(max_retries="0"), True, 2).outcome is Outcome.FAIL
    # a bad parameter (the task's start already failed it) falls back to the default
    assert decide("w1", _task(max_retries="x"), True, 2).outcome is Outcome.REQUEUE


def test_no_queue_means_fail() -> None:
    decision = decide("w1", _task(), has_queue=False, default_retries=2)
    assert decision.outcome is Outcome.FAIL
    assert "no longer exists" in decision.message


def test_leave_alone() -> None:
    assert decide("w1", None, True, 2).outcome is Outcome.NOTHING
    assert decide("w1", _task("completed"), True, 2).outcome is Outcome.NOTHING
    assert decide("w1", _task(worker="w2"), True, 2).outcome is Outcome.NOTHING


def test_zero_retries_allowed_fails_at_once() -> None:
    assert decide("w1", _task(), True, 0).outcome is Outcome.FAIL
