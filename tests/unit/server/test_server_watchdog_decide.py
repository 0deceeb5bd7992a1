"""The watchdog's pure decision: requeue, fail, or leave alone."""

from __future__ import annotations

from typing import Any

from agent.server.watchdog import Outcome, decide


def _task(status: str = "in_progress", worker: str = "w1") -> dict[str, Any]:
    return {"id": "t", "status": status, "last_worker": worker}


def test_requeue_until_the_limit_then_fail() -> None:
    assert decide("w1", _task(), 0, 3, has_queue=True).outcome is Outcome.REQUEUE
    assert decide("w1", _task(), 2, 3, has_queue=True).outcome is Outcome.REQUEUE
    failed = decide("w1", _task(), 3, 3, has_queue=True)
    assert failed.outcome is Outcome.FAIL
    assert failed.reason.startswith("lost worker")


def test_requeue_reason_counts_attempts() -> None:
    assert "(1/3)" in decide("w1", _task(), 0, 3, has_queue=True).reason


def test_no_queue_means_fail() -> None:
    assert decide("w1", _task(), 0, 3, has_queue=False).outcome is Outcome.FAIL


def test_leave_alone() -> None:
    assert decide("w1", None, 0, 3, has_queue=True).outcome is Outcome.NOTHING
    assert decide("w1", _task("completed"), 0, 3, has_queue=True).outcome is Outcome.NOTHING
    other = decide("w1", _task(worker="w2"), 0, 3, has_queue=True)
    assert other.outcome is Outcome.NOTHING


def test_zero_requeues_allowed_fails_at_once() -> None:
    assert decide("w1", _task(), 0, 0, has_queue=True).outcome is Outcome.FAIL
