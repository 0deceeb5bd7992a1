"""Applying the retry policy's verdict to a task the agent gave up on: requeue it at the front
of its queue with its attempt counter raised, or fail it; a closing line on its console.

Only public ClearML calls, so it works on any server: ``tasks.stopped`` (not forced: if the
task moved on meanwhile, e.g. the server's watchdog requeued it, that stands), ``tasks.edit``
(the counter in ``runtime``), ``tasks.enqueue`` and ``queues.move_task_to_front``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent import retry
from agent.api.client import ApiClient
from agent.api.errors import ApiError
from agent.supervise.logs import AGENT_PREFIX

log = structlog.get_logger()

IN_PROGRESS = "in_progress"
LOST_TASK_FIELDS = ("id", "status", "last_worker", "runtime", "hyperparams", "execution")


def closing_event(task_id: str, worker: str, line: str) -> dict[str, Any]:
    """A console line written by the agent outside a run (no spool: the run is gone)."""
    return {
        "type": "log",
        "task": task_id,
        "worker": worker,
        "level": "warning",
        "msg": AGENT_PREFIX + line,
        "timestamp": int(time.time() * 1000),
    }


async def record_attempt(
    api: ApiClient, task_id: str, runtime: Mapping[str, Any], attempt: int, cap: int
) -> None:
    """Write the attempt counter and the cap in force onto the task (its ``runtime``)."""
    wanted = {retry.ATTEMPT_FIELD: attempt, retry.CAP_FIELD: cap}
    if all(runtime.get(k) == v for k, v in wanted.items()):
        return
    await api.edit_task(task_id, {"runtime": {**runtime, **wanted}})


async def apply_verdict(
    api: ApiClient,
    task_id: str,
    queue_id: str,
    runtime: Mapping[str, Any],
    verdict: retry.Verdict,
    worker: str,
    *,
    closing_line: bool = True,
    replace_end: bool = False,
) -> bool:
    """Requeue or fail ``task_id`` as ``verdict`` says. False if the task had moved on (not
    in progress any more) or the server refused: then nothing is changed by this agent.
    ``replace_end``: the caller knows that a ``stopped`` or ``failed`` status is not the
    task's own end (the Slurm glue: Slurm's TERM to a job it preempted); it is replaced."""
    try:
        status, _, _ = await api.task_progress(task_id)
        ended = replace_end and status in ("stopped", "failed")
        if status != IN_PROGRESS and not ended:  # requeued or ended by someone else: theirs
            log.info("lost task left as it is", task_id=task_id, status=status)
            return False
        if verdict.retry and queue_id:
            # Stop it first (not forced): if it changed since, the server refuses.
            await api.stopped(task_id, verdict.reason, message=verdict.message, force=ended)
        else:
            await api.failed(task_id, verdict.reason, message=verdict.message, force=ended)
    except ApiError as exc:
        log.info("lost task left as it is", task_id=task_id, error=str(exc))
        return False
    if closing_line:  # (a live run writes it on its own console instead)
        await _closing_line(api, task_id, worker, verdict.console)
    if not (verdict.retry and queue_id):
        log.warning("lost task failed", task_id=task_id, reason=verdict.message)
        return True
    try:
        runtime = {**runtime, retry.ATTEMPT_FIELD: verdict.next_attempt}
        await api.edit_task(task_id, {"runtime": runtime})
        await api.enqueue(task_id, queue_id, reason=verdict.reason, message=verdict.message)
        await api.move_to_front(queue_id, task_id)
    except ApiError as exc:
        log.error("lost task could not be requeued", task_id=task_id, error=str(exc))
        return False
    log.warning("lost task requeued", task_id=task_id, message=verdict.message)
    return True


async def _closing_line(api: ApiClient, task_id: str, worker: str, line: str) -> None:
    try:
        await api.add_events([closing_event(task_id, worker, line)])
    except ApiError as exc:
        log.warning("closing console line not written", task_id=task_id, error=str(exc))


async def recover_lost_tasks(
    api: ApiClient,
    is_mine: Callable[[str], bool],
    caps: Mapping[str, int],
    default_retries: int,
    worker: str,
) -> int:
    """After a restart: the tasks the server still shows ``in_progress`` on this agent's
    workers were lost with its earlier run; requeue or fail each as the policy says (its
    queue's cap ``caps[queue id]`` unless the task recorded or sets its own). How many."""
    try:
        tasks = await api.list_tasks(status=[IN_PROGRESS], only_fields=list(LOST_TASK_FIELDS))
    except ApiError as exc:
        log.warning("could not look for tasks lost by an earlier run", error=str(exc))
        return 0
    handled = 0
    for task in tasks:
        if task.get("status") != IN_PROGRESS or not is_mine(str(task.get("last_worker") or "")):
            continue
        runtime = task.get("runtime") if isinstance(task.get("runtime"), dict) else {}
        hyperparams = task.get("hyperparams") if isinstance(task.get("hyperparams"), dict) else {}
        queue_id = str((task.get("execution") or {}).get("queue") or "")
        default = caps.get(queue_id, default_retries) if queue_id else 0
        limits = retry.limits_or_default(hyperparams or {}, runtime, default)
        if not queue_id:
            limits = retry.Limits(0, limits.retry_on_exit_codes)  # nowhere to requeue it
        verdict = retry.decide(retry.Cause.AGENT_RESTARTED, retry.attempt_of(runtime), limits)
        task_id = str(task["id"])
        if await apply_verdict(api, task_id, queue_id, runtime or {}, verdict, worker):
            handled += 1
    return handled


@dataclass(frozen=True)
class Attempt:
    """The attempt a run is: its number and the task's retry limits."""

    number: int
    limits: retry.Limits
    queue_id: str = ""  # where a requeue puts it back
    runtime: Mapping[str, Any] = field(default_factory=dict)  # as recorded at the start

    @property
    def header(self) -> str:
        return f"attempt {self.number} of {self.limits.max_attempts}"


async def begin_attempt(
    api: ApiClient, doc: Mapping[str, Any], hyperparams: Mapping[str, Any], default_retries: int
) -> Attempt:
    """The attempt starting now, recorded on the task (its number and the cap in force, so
    the watchdog and a restarted agent apply the same cap). Raises ``RetrySettingError``
    for a task whose ``Conveyor/*`` parameters cannot be used."""
    raw = doc.get("runtime")
    runtime: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    limits = retry.limits_for(hyperparams, None, default_retries)
    number = retry.attempt_of(runtime)
    raw_execution = doc.get("execution")
    execution = raw_execution if isinstance(raw_execution, Mapping) else {}
    recorded = {**runtime, retry.ATTEMPT_FIELD: number, retry.CAP_FIELD: limits.max_retries}
    attempt = Attempt(number, limits, str(execution.get("queue") or ""), recorded)
    try:
        await record_attempt(api, str(doc.get("id")), runtime, number, limits.max_retries)
    except ApiError as exc:  # the run goes on; the recovery paths fall back to the default
        log.warning("attempt counter not recorded on the task", error=str(exc))
    return attempt


RETRIED_STAGES = ("source", "environment")  # where a network or disk fault is infrastructure


def verdict_for_stage(attempt: Attempt, stage: str, reason: str) -> retry.Verdict | None:
    """A requeue verdict for a stage error that names a network or disk fault; else None."""
    if stage not in RETRIED_STAGES or not retry.transient_environment_error(reason):
        return None
    return retry.decide(retry.Cause.ENVIRONMENT, attempt.number, attempt.limits, reason)


def verdict_for_exit(attempt: Attempt, returncode: int | None, detail: str) -> retry.Verdict | None:
    """A verdict for an exit code the task listed in ``Conveyor/retry_on_exit_codes``."""
    if not retry.retries_exit_code(attempt.limits, returncode):
        return None
    return retry.decide(retry.Cause.EXIT_CODE, attempt.number, attempt.limits, detail)


async def superseded(api: ApiClient, task_id: str, attempt: Attempt | None) -> bool:
    """Has the server moved the task on to a later attempt than ``attempt``? Checked before a
    final status: an agent that could not report for a while (the server down, a network
    cut) must not end the attempt the watchdog handed to another worker meanwhile."""
    if attempt is None:
        return False
    try:
        _, _, current = await api.task_progress(task_id)
    except ApiError as exc:  # the final report itself will say what is wrong
        log.warning("could not check the task's attempt before its final status", error=str(exc))
        return False
    if current <= attempt.number:
        return False
    log.warning(
        "a later attempt owns the task: final status not reported",
        task_id=task_id,
        attempt=attempt.number,
        current=current,
    )
    return True


async def clear_attempts(api: ApiClient, task_id: str) -> None:
    """A user's requeue starts the count afresh: the retry counter off the task's runtime."""
    raw = (await api.get_task_document(task_id)).get("runtime")
    runtime = dict(raw) if isinstance(raw, Mapping) else {}
    kept = {k: v for k, v in runtime.items() if k not in (retry.ATTEMPT_FIELD, retry.CAP_FIELD)}
    if kept != runtime:
        await api.edit_task(task_id, {"runtime": kept})
