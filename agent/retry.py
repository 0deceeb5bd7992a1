"""The task retry policy (pure): an infrastructure failure requeues, a script's own fails.

One answer for one cause, whoever notices it (the agent at its restart, the server's watchdog
after the worker timeout, the pipeline when an environment cannot be built, the Slurm glue
when the cluster preempts, loses or cannot take a job). The attempt
counter and the cap live on the task (``runtime.conveyor_attempt``,
``runtime.conveyor_max_retries``), so every path reads the same numbers. Caps, highest
precedence first: the task's ``Conveyor/max_retries`` parameter, the cap the agent recorded
when it started the attempt (its per-queue setting), the default (2 retries: 3 attempts).
docs/reliability.md has the policy as a table.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_RETRIES = 2
MAX_RETRIES_LIMIT = 100  # a task asking for more is refused (a typo, not a plan)
SECTION = "Conveyor"  # the hyperparameter section a task sets its own retry policy in
MAX_RETRIES_PARAM = "max_retries"
EXIT_CODES_PARAM = "retry_on_exit_codes"
ATTEMPT_FIELD = "conveyor_attempt"  # runtime: the attempt now queued or running (1 = first)
CAP_FIELD = "conveyor_max_retries"  # runtime: the cap recorded when the attempt started
ATTEMPT_ENV = "CONVEYOR_ATTEMPT"  # the task process's own attempt number
LOST_WORKER = "lost worker"


class Cause(enum.Enum):
    """Why an attempt ended without its script finishing by itself."""

    AGENT_RESTARTED = "agent restarted"  # infrastructure: the agent died under the task
    WORKER_SILENT = "worker silent"  # infrastructure: the server's watchdog lost the agent
    ENVIRONMENT = "environment"  # infrastructure: network or disk fault building it
    EXIT_CODE = "exit code"  # the script's own: non-zero exit
    # The Slurm glue's (agent/slurm): the cluster ended the job, not the script.
    SLURM_PREEMPTED = "slurm preempted"  # a higher-priority job took the resources
    SLURM_NODE_FAILURE = "slurm node failure"  # the node died or never booted under the job
    SLURM_JOB_LOST = "slurm job lost"  # the controller lost the job (restart, system failure)
    SLURM_UNREACHABLE = "slurm unreachable"  # the controller did not answer sbatch


# What the closing console line and the status message say happened, per cause.
_LOST_HOW = {
    Cause.AGENT_RESTARTED: "the agent restarted while running it",
    Cause.WORKER_SILENT: "its agent stopped reporting (worker timeout)",
    Cause.ENVIRONMENT: "its environment could not be built",
    Cause.EXIT_CODE: "the script exited with a code the task retries on",
    Cause.SLURM_PREEMPTED: "slurm preempted its job",
    Cause.SLURM_NODE_FAILURE: "its slurm node failed",
    Cause.SLURM_JOB_LOST: "its slurm job was lost",
    Cause.SLURM_UNREACHABLE: "the slurm controller did not answer",
}
_REASON = {
    Cause.AGENT_RESTARTED: LOST_WORKER,
    Cause.WORKER_SILENT: LOST_WORKER,
    Cause.ENVIRONMENT: "environment failed",
    Cause.EXIT_CODE: "exit code",
    Cause.SLURM_PREEMPTED: "preempted in slurm",
    Cause.SLURM_NODE_FAILURE: "slurm node failure",
    Cause.SLURM_JOB_LOST: "slurm job lost",
    Cause.SLURM_UNREACHABLE: "slurm unreachable",
}
# Once no retries are left, these fail with their own text (``detail``: the stage error, the
# exit status) as the reason; the Slurm causes with the reason and Slurm's words after it.
_OWN_REASON = frozenset({Cause.ENVIRONMENT, Cause.EXIT_CODE})
_SLURM = frozenset(
    {Cause.SLURM_PREEMPTED, Cause.SLURM_NODE_FAILURE, Cause.SLURM_JOB_LOST,
     Cause.SLURM_UNREACHABLE}
)  # fmt: skip
_FAILED_VERB = frozenset({Cause.ENVIRONMENT, Cause.EXIT_CODE, Cause.SLURM_UNREACHABLE})


class RetrySettingError(ValueError):
    """A task's ``Conveyor/*`` retry parameter cannot be used; the message names it."""


@dataclass(frozen=True)
class Limits:
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_on_exit_codes: frozenset[int] = frozenset()

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1


@dataclass(frozen=True)
class Verdict:
    """What to do with an attempt that ended by ``cause``."""

    retry: bool
    attempt: int  # the attempt that ended
    next_attempt: int  # the attempt to queue (== attempt when not retried)
    max_attempts: int
    reason: str  # status_reason
    message: str  # status_message
    console: str  # the closing line on the ended attempt's console (without "conveyor: ")


def decide(cause: Cause, attempt: int, limits: Limits, detail: str = "") -> Verdict:
    """Retry (requeue at the front) or fail, for an attempt ended by ``cause``.

    ``detail`` is the failure's own text (the stage error, the exit status, the Slurm job and
    what Slurm said): the reason a task fails with for an environment or exit-code cause,
    after the cause's reason for a Slurm one. Whether an exit code is retried
    at all is :func:`retries_exit_code`'s answer; this decides only whether retries are left.
    """
    attempt = max(1, attempt)
    verb = "failed" if cause in _FAILED_VERB else "lost"
    how = f"{_LOST_HOW[cause]}: {detail}" if detail else _LOST_HOW[cause]
    reason = _REASON[cause]
    if attempt <= limits.max_retries:
        nxt = attempt + 1
        then = f"requeued (attempt {nxt} of {limits.max_attempts})"
        console = f"attempt {attempt} {verb}: {how}; {then}"
        return Verdict(
            True, attempt, nxt, limits.max_attempts, reason, f"{reason}: {then}", console
        )
    tried = f"attempt {attempt} of {limits.max_attempts}, no retries left"
    message = f"{reason}: {how} ({tried})"
    console = f"attempt {attempt} {verb}: {how}; failed ({tried})"
    fail_reason = reason
    if detail and cause in _OWN_REASON:
        fail_reason = detail
    elif detail and cause in _SLURM:
        fail_reason = f"{reason}: {detail}"
    return Verdict(False, attempt, attempt, limits.max_attempts, fail_reason, message, console)


def retries_exit_code(limits: Limits, returncode: int | None) -> bool:
    """Does the task ask to be retried when its script exits with ``returncode``?"""
    return returncode is not None and returncode != 0 and returncode in limits.retry_on_exit_codes


def attempt_of(runtime: Mapping[str, Any] | None) -> int:
    """The attempt number recorded on a task (1 when none is, or it is unreadable)."""
    value = (runtime or {}).get(ATTEMPT_FIELD)
    try:
        return max(1, int(str(value))) if value is not None else 1
    except ValueError:
        return 1


def _param(hyperparams: Mapping[str, Any], name: str) -> str:
    entry = (hyperparams.get(SECTION) or {}).get(name)
    if isinstance(entry, Mapping):
        entry = entry.get("value")
    elif entry is not None and hasattr(entry, "value"):
        entry = entry.value  # a parsed Param
    return "" if entry is None else str(entry).strip()


def _whole(text: str, what: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise RetrySettingError(f"{what} must be a whole number, got {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise RetrySettingError(f"{what} must be between {low} and {high}, got {value}")
    return value


def limits_for(
    hyperparams: Mapping[str, Any], runtime: Mapping[str, Any] | None, default: int
) -> Limits:
    """The task's limits: ``Conveyor/max_retries`` > the recorded cap > ``default``.

    Raises :class:`RetrySettingError` for a parameter that is not a number in range.
    """
    exit_codes: frozenset[int] = frozenset()
    text = _param(hyperparams, EXIT_CODES_PARAM)
    if text:
        name = f"{SECTION}/{EXIT_CODES_PARAM}"
        words = [w for w in text.replace(",", " ").split() if w]
        exit_codes = frozenset(_whole(w, f"{name} entry", 1, 255) for w in words)
    text = _param(hyperparams, MAX_RETRIES_PARAM)
    if text:
        cap = _whole(text, f"{SECTION}/{MAX_RETRIES_PARAM}", 0, MAX_RETRIES_LIMIT)
        return Limits(cap, exit_codes)
    recorded = (runtime or {}).get(CAP_FIELD)
    if recorded is not None and re.fullmatch(r"\d+", str(recorded)):
        return Limits(min(int(str(recorded)), MAX_RETRIES_LIMIT), exit_codes)
    return Limits(default, exit_codes)


def limits_or_default(
    hyperparams: Mapping[str, Any], runtime: Mapping[str, Any] | None, default: int
) -> Limits:
    """As :func:`limits_for`, but a bad parameter falls back to the recorded cap or default
    (for the recovery paths: the task's start already failed it with the error)."""
    try:
        return limits_for(hyperparams, runtime, default)
    except RetrySettingError:
        return limits_for({}, runtime, default)


def queue_caps(
    names: Sequence[str], ids: Sequence[str], per_queue: Mapping[str, str], default: int
) -> dict[str, int]:
    """The retry cap of each served queue id, from per-queue settings keyed by name or id.

    Raises :class:`RetrySettingError` for a value that is not a whole number in range.
    """
    caps: dict[str, int] = {}
    for name, queue_id in zip(names, ids, strict=False):
        raw = per_queue.get(name, per_queue.get(queue_id))
        what = f"queue_max_retries[{name!r}]"
        caps[queue_id] = default if raw is None else _whole(str(raw), what, 0, MAX_RETRIES_LIMIT)
    return caps


# Environment failures worth another attempt: the network or the disk, not the task's own
# requirements (a missing package, a version conflict, a syntax error fail for good). Kept
# conservative: only these recognisable texts count; anything else fails the task.
_TRANSIENT_ENVIRONMENT = (
    "no space left on device",
    "disk quota exceeded",
    "temporary failure in name resolution",
    "name or service not known",
    "connection refused",
    "connection reset",
    "connection timed out",
    "network is unreachable",
    "no route to host",
    "failed to connect",
    "could not connect",
    "read timed out",
    "operation timed out",
    "tls handshake",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
    "docker engine:",  # the container engine went away under the task (container.py)
)


def transient_environment_error(reason: str) -> bool:
    """Pure: does an environment stage's error text name a network or disk fault?"""
    text = reason.lower()
    return any(marker in text for marker in _TRANSIENT_ENVIRONMENT)


# Slurm's words for a job that ended by the cluster's doing, not the script's: its state, or
# for a job that ended FAILED or CANCELLED, the reason Slurm gave (squeue's %r).
_SLURM_STATES = {
    "PREEMPTED": Cause.SLURM_PREEMPTED,
    "NODE_FAIL": Cause.SLURM_NODE_FAILURE,
    "BOOT_FAIL": Cause.SLURM_NODE_FAILURE,
    "": Cause.SLURM_JOB_LOST,  # gone from squeue and accounting: the controller lost it
}
_SLURM_REASONS = {
    "NodeDown": Cause.SLURM_NODE_FAILURE,
    "SystemFailure": Cause.SLURM_JOB_LOST,
    "JobLaunchFailure": Cause.SLURM_JOB_LOST,
}


def slurm_cause(state: str, reason: str = "") -> Cause | None:
    """Pure: the infrastructure cause of a Slurm job that ended in ``state`` (upper case, ""
    when Slurm no longer knows the job) with Slurm's ``reason``; None when the end is the
    script's own (COMPLETED, FAILED, TIMEOUT, OUT_OF_MEMORY, a CANCELLED by someone)."""
    if state in _SLURM_STATES:
        return _SLURM_STATES[state]
    if state in ("FAILED", "CANCELLED"):
        return _SLURM_REASONS.get(reason.strip())
    return None
