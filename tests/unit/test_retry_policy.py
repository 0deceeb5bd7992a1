"""The retry policy, table-driven: cause and attempt → retry or fail, reason and counters."""

from __future__ import annotations

from typing import Any

import pytest

from agent.retry import (
    Cause,
    Limits,
    RetrySettingError,
    attempt_of,
    decide,
    limits_for,
    limits_or_default,
    queue_caps,
    retries_exit_code,
    slurm_cause,
    transient_environment_error,
)

DEFAULT = Limits()


@pytest.mark.parametrize(
    ("cause", "attempt", "limits", "retry", "next_attempt", "reason", "message"),
    [
        (
            Cause.AGENT_RESTARTED,
            1,
            DEFAULT,
            True,
            2,
            "lost worker",
            "lost worker: requeued (attempt 2 of 3)",
        ),
        (
            Cause.AGENT_RESTARTED,
            2,
            DEFAULT,
            True,
            3,
            "lost worker",
            "lost worker: requeued (attempt 3 of 3)",
        ),
        (
            Cause.AGENT_RESTARTED,
            3,
            DEFAULT,
            False,
            3,
            "lost worker",
            "lost worker: the agent restarted while running it (attempt 3 of 3, no retries left)",
        ),
        (
            Cause.WORKER_SILENT,
            1,
            DEFAULT,
            True,
            2,
            "lost worker",
            "lost worker: requeued (attempt 2 of 3)",
        ),
        (
            Cause.WORKER_SILENT,
            1,
            Limits(0),
            False,
            1,
            "lost worker",
            "lost worker: its agent stopped reporting (worker timeout) "
            "(attempt 1 of 1, no retries left)",
        ),
        (
            Cause.AGENT_RESTARTED,
            5,
            Limits(5),
            True,
            6,
            "lost worker",
            "lost worker: requeued (attempt 6 of 6)",
        ),
        (
            Cause.ENVIRONMENT,
            1,
            DEFAULT,
            True,
            2,
            "environment failed",
            "environment failed: requeued (attempt 2 of 3)",
        ),
        (
            Cause.EXIT_CODE,
            2,
            Limits(1, frozenset({3})),
            False,
            2,
            "exited with code 3",
            "exit code: the script exited with a code the task retries on: exited with code 3 "
            "(attempt 2 of 2, no retries left)",
        ),
    ],
)
def test_decide(
    cause: Cause,
    attempt: int,
    limits: Limits,
    retry: bool,
    next_attempt: int,
    reason: str,
    message: str,
) -> None:
    detail = "exited with code 3" if cause is Cause.EXIT_CODE else ""
    verdict = decide(cause, attempt, limits, detail)
    assert (verdict.retry, verdict.next_attempt, verdict.reason, verdict.message) == (
        retry,
        next_attempt,
        reason,
        message,
    )
    assert verdict.max_attempts == limits.max_retries + 1


def test_console_lines_tell_the_story() -> None:
    lost = decide(Cause.AGENT_RESTARTED, 1, DEFAULT)
    assert lost.console == (
        "attempt 1 lost: the agent restarted while running it; requeued (attempt 2 of 3)"
    )
    env = decide(Cause.ENVIRONMENT, 3, DEFAULT, "requirements failed: Connection refused")
    assert env.console == (
        "attempt 3 failed: its environment could not be built: requirements failed: "
        "Connection refused; failed (attempt 3 of 3, no retries left)"
    )
    assert env.reason == "requirements failed: Connection refused"


@pytest.mark.parametrize(
    ("state", "reason", "cause"),
    [
        ("PREEMPTED", "None", Cause.SLURM_PREEMPTED),
        ("NODE_FAIL", "NodeDown", Cause.SLURM_NODE_FAILURE),
        ("BOOT_FAIL", "", Cause.SLURM_NODE_FAILURE),
        ("", "", Cause.SLURM_JOB_LOST),  # gone from squeue and accounting
        ("FAILED", "NodeDown", Cause.SLURM_NODE_FAILURE),
        ("CANCELLED", "SystemFailure", Cause.SLURM_JOB_LOST),
        ("FAILED", "JobLaunchFailure", Cause.SLURM_JOB_LOST),
        # the script's own (or a person's): not retried
        ("TIMEOUT", "TimeLimit", None),
        ("FAILED", "NonZeroExitCode", None),
        ("OUT_OF_MEMORY", "OutOfMemory", None),
        ("CANCELLED", "None", None),
        ("COMPLETED", "None", None),
        ("DEADLINE", "", None),
    ],
)
def test_slurm_states_name_their_cause(state: str, reason: str, cause: Cause | None) -> None:
    assert slurm_cause(state, reason) is cause


@pytest.mark.parametrize(
    ("cause", "console", "message"),
    [
        (
            Cause.SLURM_PREEMPTED,
            "attempt 1 lost: slurm preempted its job: slurm job 12 (PREEMPTED); "
            "requeued (attempt 2 of 3)",
            "preempted in slurm: requeued (attempt 2 of 3)",
        ),
        (
            Cause.SLURM_NODE_FAILURE,
            "attempt 1 lost: its slurm node failed: slurm job 12 (PREEMPTED); "
            "requeued (attempt 2 of 3)",
            "slurm node failure: requeued (attempt 2 of 3)",
        ),
        (
            Cause.SLURM_JOB_LOST,
            "attempt 1 lost: its slurm job was lost: slurm job 12 (PREEMPTED); "
            "requeued (attempt 2 of 3)",
            "slurm job lost: requeued (attempt 2 of 3)",
        ),
        (
            Cause.SLURM_UNREACHABLE,
            "attempt 1 failed: the slurm controller did not answer: slurm job 12 (PREEMPTED); "
            "requeued (attempt 2 of 3)",
            "slurm unreachable: requeued (attempt 2 of 3)",
        ),
    ],
)
def test_slurm_causes_requeue_under_the_same_cap(cause: Cause, console: str, message: str) -> None:
    verdict = decide(cause, 1, DEFAULT, "slurm job 12 (PREEMPTED)")
    assert (verdict.retry, verdict.next_attempt, verdict.console, verdict.message) == (
        True,
        2,
        console,
        message,
    )


def test_a_slurm_cause_past_the_cap_fails_with_what_slurm_said() -> None:
    verdict = decide(Cause.SLURM_PREEMPTED, 2, Limits(1), "slurm job 12 (PREEMPTED)")
    assert not verdict.retry
    assert verdict.reason == "preempted in slurm: slurm job 12 (PREEMPTED)"
    assert verdict.message == (
        "preempted in slurm: slurm preempted its job: slurm job 12 (PREEMPTED) "
        "(attempt 2 of 2, no retries left)"
    )
    assert decide(Cause.SLURM_NODE_FAILURE, 1, Limits(0)).reason == "slurm node failure"


def _params(**values: str) -> dict[str, Any]:
    return {
        "Conveyor": {k: {"section": "Conveyor", "name": k, "value": v} for k, v in values.items()}
    }


@pytest.mark.parametrize(
    ("hyperparams", "runtime", "expected"),
    [
        ({}, None, Limits(2)),
        ({}, {"conveyor_max_retries": 4}, Limits(4)),
        ({}, {"conveyor_max_retries": "x"}, Limits(2)),
        (_params(max_retries="0"), {"conveyor_max_retries": 4}, Limits(0)),
        (_params(max_retries=" 7 "), None, Limits(7)),
        (_params(retry_on_exit_codes="3, 75 99"), None, Limits(2, frozenset({3, 75, 99}))),
        (_params(max_retries=""), None, Limits(2)),
    ],
)
def test_limits_for(
    hyperparams: dict[str, Any], runtime: dict[str, Any] | None, expected: Limits
) -> None:
    assert limits_for(hyperparams, runtime, 2) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_retries": "two"}, "Conveyor/max_retries must be a whole number, got 'two'"),
        ({"max_retries": "-1"}, "Conveyor/max_retries must be between 0 and 100, got -1"),
        ({"max_retries": "1000"}, "between 0 and 100, got 1000"),
        ({"retry_on_exit_codes": "3,x"}, "Conveyor/retry_on_exit_codes entry must be a whole"),
        ({"retry_on_exit_codes": "0"}, "between 1 and 255, got 0"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(params: dict[str, str], message: str) -> None:
    with pytest.raises(RetrySettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        limits_for(_params(**params), None, 2)
    assert limits_or_default(_params(**params), {"conveyor_max_retries": 1}, 2) == Limits(1)


@pytest.mark.parametrize(
    ("runtime", "attempt"),
    [
        (None, 1),
        ({}, 1),
        ({"conveyor_attempt": 3}, 3),
        ({"conveyor_attempt": "2"}, 2),
        ({"conveyor_attempt": "junk"}, 1),
        ({"conveyor_attempt": 0}, 1),
    ],
)
def test_attempt_of(runtime: dict[str, Any] | None, attempt: int) -> None:
    assert attempt_of(runtime) == attempt


def test_exit_codes_retry_only_when_listed() -> None:
    limits = Limits(2, frozenset({3}))
    assert retries_exit_code(limits, 3)
    assert not retries_exit_code(limits, 1)
    assert not retries_exit_code(limits, 0)
    assert not retries_exit_code(limits, None)
    assert not retries_exit_code(DEFAULT, 3)


def test_queue_caps_by_name_or_id() -> None:
    caps = queue_caps(["gpu", "cpu", "q3"], ["id-g", "id-c", "id-3"], {"gpu": "5", "id-3": "0"}, 2)
    assert caps == {"id-g": 5, "id-c": 2, "id-3": 0}
    with pytest.raises(RetrySettingError, match="queue_max_retries\\['cpu'\\]"):
        queue_caps(["cpu"], ["id-c"], {"cpu": "many"}, 2)


@pytest.mark.parametrize(
    ("reason", "transient"),
    [
        ("requirements failed: error: Failed to fetch: Connection refused (os error 111)", True),
        ("could not create the environment: [Errno 28] No space left on device", True),
        ("requirements failed: dns error: Temporary failure in name resolution", True),
        ("requirements failed: No solution found when resolving: torch==9.9", False),
        ("requirements failed: Because nonexistent-pkg was not found", False),
        ("python 3.99 is not available", False),
    ],
)
def test_environment_errors_classified_conservatively(reason: str, transient: bool) -> None:
    assert transient_environment_error(reason) is transient
