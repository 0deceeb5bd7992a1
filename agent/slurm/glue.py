"""The glue's loop: claim queued tasks into Slurm batch jobs, watch them all with one ``squeue``
per poll, and tell the server what Slurm says. It holds nothing a restart cannot rebuild: the
jobs are found again by name (``<prefix><task id>-<attempt>``), their queue in the job comment.
A job the cluster ended (preemption, node failure, a lost job, a controller away) goes through
the retry policy (agent/retry.py) like any infrastructure failure: the attempt is the task's
``runtime.conveyor_attempt``, the cap ``Conveyor/max_retries`` or the queue's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent import retry
from agent.api.client import ApiClient
from agent.api.errors import ApiError
from agent.api.models import TaskDocumentError, TaskSpec
from agent.config.settings import Settings
from agent.pipeline.host import ServerAccess
from agent.pipeline.report import ABORTED_BY_USER
from agent.pipeline.requeue import apply_verdict
from agent.slurm.jobscript import batch_script, job_env, write_secret
from agent.slurm.resources import TASK_SECTION, ResourceError, job_options, queue_cap
from agent.slurm.slurmcli import SlurmCli, SlurmError
from agent.slurm.states import (
    DELETED,
    IN_PROGRESS,
    Act,
    Decision,
    Job,
    TaskView,
    decide,
    job_name,
    latest,
    pending_message,
)  # fmt: skip

log = structlog.get_logger()
TASK_FIELDS = ["id", "status", "status_message", "status_reason", "last_worker", "runtime"]
LOST_MESSAGE = "the slurm glue restarted and found no job for it"


@dataclass
class Tracked:
    job: Job
    shown: str = ""  # the status message last set while pending
    abort_seen: float | None = None  # when an abort of the running job was first seen
    escalated: int = 0  # 1: scancel --signal=TERM sent, 2: scancel sent
    max_attempts: int = 0  # the task's cap when this glue submitted the job (0: adopted)


def task_view(doc: Mapping[str, object]) -> TaskView:
    """The fields of a task document the decisions read."""
    runtime = doc.get("runtime")
    return TaskView(
        str(doc.get("status") or ""),
        str(doc.get("status_message") or ""),
        str(doc.get("status_reason") or ""),
        retry.attempt_of(runtime if isinstance(runtime, dict) else None),
    )


def _running(view: TaskView) -> bool:
    return view.status == IN_PROGRESS and not view.aborted


class Glue:
    def __init__(
        self, settings: Settings, api: ApiClient, slurm: SlurmCli, access: ServerAccess,
        worker: str,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.api = api
        self.slurm = slurm
        self.access = access
        self.worker = worker
        self.prefix = settings.slurm_job_prefix
        self.tracked: dict[str, Tracked] = {}
        self.queues: dict[str, str] = {}  # queue id -> the name it was given by
        self.caps: dict[str, int] = {}  # queue id -> its retry cap (queue_max_retries)
        self.stopping = asyncio.Event()
        self.polls = 0

    # --- the story --------------------------------------------------------------------
    async def start(self) -> None:
        """Resolve the queues and their retry caps, register, adopt the jobs Slurm has."""
        for name in self.settings.queues or ("default",):
            self.queues[await self.api.queue_id(name)] = name
        self.caps = retry.queue_caps(
            list(self.queues.values()), list(self.queues), self.settings.queue_max_retries,
            self.settings.max_retries,
        )  # fmt: skip
        await self.api.register_worker(self.worker, list(self.queues))
        await self._adopt()

    async def run(self) -> None:
        try:
            await self.start()
            log.info("slurm glue ready", worker=self.worker, queues=list(self.queues.values()),
                     adopted=len(self.tracked))  # fmt: skip
            while not self.stopping.is_set():
                await self.poll_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.settings.slurm_poll_interval)
        finally:
            with contextlib.suppress(ApiError):
                await self.api.unregister_worker(self.worker)
            log.info("slurm glue stopped", jobs_left_in_slurm=len(self.tracked),
                     polls=self.polls, slurm_calls=dict(self.slurm.calls))  # fmt: skip

    async def poll_once(self) -> None:
        """One round: one squeue, one task listing, then claims while the queues have room."""
        self.polls += 1
        try:
            await self._watch(latest(await self.slurm.jobs(self.prefix)))
            await self._claim()
            await self.api.status_report(self.worker, queues=list(self.queues))
        except (ApiError, SlurmError) as exc:
            log.warning("slurm poll failed; next poll retries", error=str(exc))

    # --- after a restart ----------------------------------------------------------------
    async def _adopt(self) -> None:
        """Track the jobs Slurm has under our prefix; the tasks this glue had started whose
        job is nowhere (it vanished while the glue was away, or was never submitted) go
        through the retry policy as lost."""
        jobs = latest(await self.slurm.jobs(self.prefix))
        self.tracked = {task_id: Tracked(job) for task_id, job in jobs.items()}
        tasks = await self.api.list_tasks(status=[IN_PROGRESS], only_fields=TASK_FIELDS)
        for task in tasks:
            task_id = str(task.get("id") or "")
            if task.get("last_worker") != self.worker or task_id in self.tracked:
                continue
            log.warning("task without a slurm job", task_id=task_id)
            with contextlib.suppress(ApiError):
                await self._requeue(task_id, "", retry.Cause.SLURM_JOB_LOST, LOST_MESSAGE, _running)

    # --- watching ---------------------------------------------------------------------
    async def _watch(self, jobs: Mapping[str, Job]) -> None:
        gone = [t for t in self.tracked if t not in jobs]
        found = await self.slurm.history([self.tracked[t].job.job_id for t in gone], self.prefix)
        for task_id, tracked in self.tracked.items():
            if task_id in jobs:
                tracked.job = jobs[task_id]
            elif tracked.job.active:  # left squeue: sacct's word, else unknown ("")
                old = tracked.job
                tracked.job = found.get(old.job_id) or dataclasses.replace(old, state="", reason="")
        views = await self._task_views(list(self.tracked))
        for task_id, tracked in list(self.tracked.items()):
            view = views.get(task_id, TaskView(DELETED))
            decision = decide(tracked.job, view)
            await self._apply(task_id, tracked, view, decision)

    async def _task_views(self, task_ids: list[str]) -> dict[str, TaskView]:
        if not task_ids:
            return {}
        docs = await self.api.list_tasks(id=task_ids, only_fields=TASK_FIELDS)
        return {str(d["id"]): task_view(d) for d in docs}

    async def _apply(self, task_id: str, tracked: Tracked, view: TaskView, d: Decision) -> None:
        job = tracked.job
        if d.act is Act.SHOW_PENDING:
            message = pending_message(job, tracked.max_attempts)
            if message != tracked.shown and view.status == IN_PROGRESS:
                await self._show(task_id, message)
                tracked.shown = message
        elif d.act is Act.CANCEL:
            log.info("aborted while pending: scancel", task_id=task_id, job=job.job_id)
            await self.slurm.cancel(job.job_id)
            if view.status == IN_PROGRESS:
                await self.api.stopped(task_id, ABORTED_BY_USER)
        elif d.act is Act.ESCALATE:
            await self._escalate(task_id, tracked)
        elif d.act is Act.REQUEUE and d.cause is not None:

            def still(fresh: TaskView) -> bool:  # a stop, or an end of its own, stands
                return decide(job, fresh).act is Act.REQUEUE

            await self._requeue(task_id, job.queue_id, d.cause, d.reason, still)
            self._forget(task_id)  # (only now: a server away, the next poll decides again)
        elif d.act is not Act.NOTHING:
            await self._finish(task_id, job, view, d)
            self._forget(task_id)

    async def _finish(self, task_id: str, job: Job, view: TaskView, d: Decision) -> None:
        if d.act is Act.FAILED:  # forced over Slurm's TERM: read afresh, a user's stop stands
            view = task_view(await self.api.get_task_document(task_id))
            d = decide(job, view)
        if d.act is Act.FAILED and view.status != "completed":
            log.warning("task failed by slurm", task_id=task_id, reason=d.reason)
            await self.api.failed(task_id, d.reason, message=d.reason, force=True)
        elif d.act is Act.STOPPED and view.status == IN_PROGRESS:
            await self.api.stopped(task_id, d.reason)

    async def _escalate(self, task_id: str, tracked: Tracked) -> None:
        """Aborted while running: `conveyor execute` in the job sees the abort and stops its
        task (grace, then kill); if the job is still there after that, TERM it, then cancel."""
        now = time.monotonic()
        if tracked.abort_seen is None:
            tracked.abort_seen = now
            return
        wait = self.settings.abort_grace + self.settings.abort_poll_interval + 5
        if tracked.escalated < 1 and now - tracked.abort_seen > wait:
            await self.slurm.cancel(tracked.job.job_id, signal="TERM")
            tracked.escalated = 1
        elif tracked.escalated < 2 and now - tracked.abort_seen > 2 * wait:
            await self.slurm.cancel(tracked.job.job_id)
            tracked.escalated = 2

    async def _show(self, task_id: str, message: str) -> None:
        """The task's status message, never over a user's stop: ``tasks.started`` without
        force is refused for a stopped task, and Conveyor's server keeps a stop request
        ("stopping") through it (agent/server/task_status.py). A server that wants force for
        any task not yet started (ClearML's documented rule) gets it once the task is read to
        be still in progress."""
        try:
            await self.api.started(task_id, message=message, force=False)
            return
        except ApiError as exc:
            status, _, _ = await self.api.task_progress(task_id)
            if status != IN_PROGRESS:  # stopped meanwhile: that stands
                log.info("status message not shown", task_id=task_id, error=str(exc))
                return
        await self.api.started(task_id, message=message, force=True)

    async def _requeue(
        self, task_id: str, queue_id: str, cause: retry.Cause, detail: str,
        still: Callable[[TaskView], bool],
    ) -> None:  # fmt: skip
        """The retry policy for an infrastructure cause: requeue the task at the front with
        its attempt counter raised (a closing line on its console), or fail it past its cap.
        Read afresh first: if ``still`` no longer holds (a user's stop, the task's own end),
        that stands."""
        doc = await self.api.get_task_document(task_id)
        view = task_view(doc)
        if not still(view):
            log.info("task moved on: left as it is", task_id=task_id, status=view.status)
            return
        raw = doc.get("runtime")
        runtime = raw if isinstance(raw, dict) else {}
        raw = doc.get("hyperparams")
        hyperparams = raw if isinstance(raw, dict) else {}
        raw = doc.get("execution")
        queue_id = str((raw if isinstance(raw, dict) else {}).get("queue") or queue_id)
        default = self.caps.get(queue_id, self.settings.max_retries)
        limits = retry.limits_or_default(hyperparams, runtime, default)
        verdict = retry.decide(cause, view.attempt, limits, detail)
        log.warning("slurm: " + verdict.console, task_id=task_id)
        await apply_verdict(
            self.api, task_id, queue_id, runtime, verdict, self.worker,
            replace_end=view.status != IN_PROGRESS,
        )  # fmt: skip

    def _forget(self, task_id: str) -> None:
        tracked = self.tracked.pop(task_id, None)
        if tracked is not None:
            name = job_name(self.prefix, task_id, tracked.job.attempt)
            self._secret_dir().joinpath(f"{name}.key").unlink(missing_ok=True)

    # --- claiming ---------------------------------------------------------------------
    def in_flight(self, queue_id: str) -> int:
        return sum(1 for t in self.tracked.values() if t.job.queue_id == queue_id)

    async def _claim(self) -> None:
        for queue_id, name in self.queues.items():
            cap = queue_cap(name, self.settings.slurm_queues, self.settings.slurm_max_jobs)
            while self.in_flight(queue_id) < cap and not self.stopping.is_set():
                task_id = await self.api.get_next_task(queue_id, self.worker)
                if task_id is None:
                    break
                await self._submit(task_id, queue_id)

    async def _submit(self, task_id: str, queue_id: str) -> None:
        """One job for the task's current attempt (``runtime.conveyor_attempt``)."""
        try:
            doc = await self.api.get_task_document(task_id)
            spec = TaskSpec.parse(doc)
            section = {p.name: p.value for p in spec.hyperparams.get(TASK_SECTION, {}).values()}
            resources = job_options(
                self.queues.get(queue_id, ""), self.settings.slurm_defaults,
                self.settings.slurm_queues, section,
            )  # fmt: skip
        except (ResourceError, TaskDocumentError) as exc:
            await self._refuse(task_id, f"not submitted to slurm: {exc}")
            return
        attempt = task_view(doc).attempt
        existing = self.tracked.get(task_id)
        if existing is not None and existing.job.active and existing.job.attempt >= attempt:
            # popped again (released when this glue re-registered): its job runs
            log.info("task already has a job: not submitted twice", task_id=task_id)
            await self._show(task_id, f"in slurm: job {existing.job.job_id}")
            return
        self._forget(task_id)
        try:  # started before sbatch: a glue killed in between finds the task, not a job
            await self.api.started(task_id, message="submitting to slurm")
        except ApiError as exc:  # (Conveyor's server: stopped between its pop and now)
            log.info("task not started: no job", task_id=task_id, error=str(exc))
            return
        raw = doc.get("hyperparams")
        limits = retry.limits_or_default(
            raw if isinstance(raw, dict) else {}, doc.get("runtime") or {},
            self.caps.get(queue_id, self.settings.max_retries),
        )  # fmt: skip
        await self._sbatch(task_id, queue_id, attempt, resources, limits)

    async def _sbatch(
        self, task_id: str, queue_id: str, attempt: int, resources: list[str],
        limits: retry.Limits,
    ) -> None:  # fmt: skip
        name = job_name(self.prefix, task_id, attempt)
        secret = write_secret(self._secret_dir(), name, self.access.secret_key)
        env = job_env(self.access, secret, self.settings.slurm_job_env, os.environ,
                      limits.max_retries)  # fmt: skip
        try:
            job_id = await self.slurm.submit(
                batch_script(self.settings.slurm_conveyor, task_id, attempt),
                [*resources, *self._job_options(name, queue_id)], env,
            )  # fmt: skip
        except SlurmError as exc:
            secret.unlink(missing_ok=True)
            if exc.transient:  # the controller is away: the policy requeues, this poll ends
                cause = retry.Cause.SLURM_UNREACHABLE
                await self._requeue(task_id, queue_id, cause, str(exc), _running)
                raise
            await self._refuse(task_id, f"sbatch refused the job: {exc}")
            return
        job = Job(job_id, task_id, attempt, "PENDING", "submitted", queue_id)
        self.tracked[task_id] = Tracked(job, max_attempts=limits.max_attempts)
        log.info("task submitted", task_id=task_id, job=job_id, attempt=attempt)
        await self._show(task_id, f"submitted to slurm: job {job_id}")

    def _job_options(self, name: str, queue_id: str) -> list[str]:
        shared = self.settings.slurm_shared_dir
        (shared / "logs").mkdir(parents=True, exist_ok=True)
        return [
            f"--job-name={name}", f"--comment={queue_id}", "--no-requeue",
            f"--output={shared / 'logs'}/%x-%j.out", f"--chdir={shared}",
        ]  # fmt: skip

    async def _refuse(self, task_id: str, reason: str) -> None:
        log.warning("task refused", task_id=task_id, reason=reason)
        await self.api.started(task_id, message="refused by the slurm glue")
        await self.api.failed(task_id, reason, message=reason, force=True)

    def _secret_dir(self) -> Path:
        return self.settings.slurm_shared_dir / "secrets"
