"""Pure: job names, ``squeue`` lines, and what the glue does about a job given its Slurm state
and its task's status (one decision function, unit-tested without Slurm or a server)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from agent import retry
from agent.pipeline.report import ABORTED_BY_USER, AGENT_SHUTDOWN

# squeue --format: id | name | state | reason | comment (the queue id the job serves)
SQUEUE_FORMAT = "%i|%j|%T|%r|%k"
ACTIVE = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
     "SIGNALING", "STAGE_OUT", "STOPPED", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT"}
)  # fmt: skip
# Ended jobs whose end Slurm's state alone pins on the cluster: whatever Slurm's TERM made of
# the task ("stopped: agent shutdown", "failed: killed by signal 15"), the policy decides.
CLUSTER_ENDED = frozenset({"PREEMPTED", "NODE_FAIL", "BOOT_FAIL"})
FINAL_TASK = frozenset({"completed", "failed", "stopped", "published", "closed"})
IN_PROGRESS = "in_progress"
STOPPING = "stopping"
DELETED = "deleted"  # not a server status: the task is gone from the listing
_TASK_ID = re.compile(r"[A-Za-z0-9_.]{1,64}")


def job_name(prefix: str, task_id: str, attempt: int) -> str:
    """``conveyor-<task id>-<attempt>``: a restarted glue finds its jobs by this name alone."""
    if not _TASK_ID.fullmatch(task_id):
        raise ValueError(f"task id {task_id!r} cannot name a Slurm job")
    return f"{prefix}{task_id}-{attempt}"


def parse_job_name(prefix: str, name: str) -> tuple[str, int] | None:
    if not name.startswith(prefix):
        return None
    task_id, _, attempt = name[len(prefix) :].rpartition("-")
    if not attempt.isdigit() or not _TASK_ID.fullmatch(task_id):
        return None
    return task_id, int(attempt)


@dataclass(frozen=True)
class Job:
    job_id: str
    task_id: str
    attempt: int
    state: str  # Slurm's, upper case; "" when Slurm no longer knows the job
    reason: str = ""
    queue_id: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def parse_squeue(text: str, prefix: str) -> list[Job]:
    """The glue's jobs among ``squeue --states=all --noheader --format=SQUEUE_FORMAT`` lines."""
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        named = parse_job_name(prefix, parts[1])
        if named is None:
            continue
        comment = parts[4] if parts[4] not in ("(null)", "") else ""
        jobs.append(Job(parts[0], named[0], named[1], parts[2].split()[0], parts[3], comment))
    return jobs


def latest(jobs: list[Job]) -> dict[str, Job]:
    """Per task, its newest job (the highest job id): a requeued task's earlier jobs, and the
    jobs of a task run again after a reset, linger in squeue for a while."""
    out: dict[str, Job] = {}
    for job in jobs:
        seen = out.get(job.task_id)
        if seen is None or int(job.job_id) > int(seen.job_id):
            out[job.task_id] = job
    return out


class Act(enum.Enum):
    NOTHING = "nothing"  # keep watching
    SHOW_PENDING = "show_pending"  # status message: pending in slurm: job N (Reason)
    CANCEL = "cancel"  # scancel a job nobody wants any more (aborted while pending)
    ESCALATE = "escalate"  # aborted while running: let `conveyor execute` stop it, then signal
    FORGET = "forget"  # the task has its final status: stop tracking
    STOPPED = "stopped"  # report the task stopped (reason)
    FAILED = "failed"  # report the task failed (reason)
    REQUEUE = "requeue"  # an infrastructure cause: the retry policy requeues or fails it


@dataclass(frozen=True)
class Decision:
    act: Act
    reason: str = ""  # FAILED/STOPPED: the status reason; REQUEUE: the job and Slurm's words
    cause: retry.Cause | None = None  # REQUEUE: what the retry policy weighs


@dataclass(frozen=True)
class TaskView:
    """What the server says of a task: the fields the glue reads in its one listing per poll."""

    status: str
    message: str = ""
    reason: str = ""
    attempt: int = 1  # runtime.conveyor_attempt: the attempt now queued or running

    @property
    def aborted(self) -> bool:
        """The user wants it to end: ``tasks.stop`` marked it, or it was stopped, reset or
        deleted (the glue's listing no longer finds it: ``TaskView("deleted")``)."""
        if self.status == IN_PROGRESS:
            return self.message.strip().lower() == STOPPING
        return self.status in ("queued", "created", DELETED) or (
            self.status == "stopped" and self.reason != AGENT_SHUTDOWN
        )

    @property
    def cut_short(self) -> bool:
        """Still running, or ended as a job that Slurm killed ends: Slurm's TERM reaches
        `conveyor execute` ("stopped: agent shutdown") and the task's own processes ("failed:
        killed by signal 15") alike. Asked only of jobs Slurm ended (time limit, preemption,
        node failure), whose task could not have ended on its own: Slurm's reason is the real
        one. A user's stop or a completion stands."""
        return self.status == "failed" or self.unfinished

    @property
    def unfinished(self) -> bool:
        """No final status of its own: running, or stopped by Slurm's TERM to the job."""
        return self.status == IN_PROGRESS or (
            self.status == "stopped" and self.reason == AGENT_SHUTDOWN
        )


def decide(job: Job, task: TaskView) -> Decision:
    """What to do about ``job`` given what the server says of its task."""
    if task.attempt > job.attempt:  # the task moved on to a later attempt: not this job's
        return Decision(Act.FORGET)
    if job.active:
        if not task.aborted:
            return Decision(Act.SHOW_PENDING if job.state == "PENDING" else Act.NOTHING)
        return Decision(Act.CANCEL if job.state == "PENDING" else Act.ESCALATE)
    if task.status == IN_PROGRESS and task.aborted:  # a stop was asked: it stands
        return Decision(Act.STOPPED, ABORTED_BY_USER)
    where = f"slurm job {job.job_id}"
    if job.state == "TIMEOUT" and task.cut_short:
        return Decision(Act.FAILED, f"{where} reached its time limit (TIMEOUT)")
    cause = retry.slurm_cause(job.state, job.reason)
    if cause is not None and (task.cut_short if job.state in CLUSTER_ENDED else task.unfinished):
        said = ", ".join(x for x in (job.state or "vanished", job.reason) if x and x != "None")
        return Decision(Act.REQUEUE, f"{where} ({said})", cause)
    if job.state == "CANCELLED" and task.cut_short and not task.aborted:
        return Decision(Act.FAILED, f"{where} was cancelled in slurm, not by conveyor")
    if task.status in FINAL_TASK:
        return Decision(Act.FORGET)
    if task.aborted:
        return Decision(Act.STOPPED, ABORTED_BY_USER)
    return Decision(Act.FAILED, f"{where} ended ({job.state.lower()}) without a final status")


def pending_message(job: Job, max_attempts: int = 0) -> str:
    """``pending in slurm: job N (Reason)``, and the attempt after the first (of how many,
    when the glue knows: not for a job it adopted after a restart)."""
    of = f" of {max_attempts}" if max_attempts else ""
    attempt = f", attempt {job.attempt}{of}" if job.attempt > 1 else ""
    return f"pending in slurm: job {job.job_id} ({job.reason or 'None'}){attempt}"
