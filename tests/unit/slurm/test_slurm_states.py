"""Pure parts of the glue: job names, squeue lines, and the job/task decision table."""

from __future__ import annotations

import pytest

from agent.retry import Cause
from agent.slurm.slurmcli import is_transient
from agent.slurm.states import (
    Act,
    Job,
    TaskView,
    decide,
    job_name,
    latest,
    parse_job_name,
    parse_squeue,
    pending_message,
)  # fmt: skip

PREFIX = "conveyor-"
TASK = "0123abcd"


def job(state: str, attempt: int = 1, reason: str = "", job_id: str = "7") -> Job:
    return Job(job_id, TASK, attempt, state, reason, "q1")


def test_job_names_round_trip_and_refuse_odd_task_ids() -> None:
    assert parse_job_name(PREFIX, job_name(PREFIX, TASK, 3)) == (TASK, 3)
    assert parse_job_name(PREFIX, "other-job") is None
    assert parse_job_name(PREFIX, "conveyor-abc") is None
    with pytest.raises(ValueError, match="cannot name"):
        job_name(PREFIX, "a b;c", 1)


def test_squeue_lines_keep_only_our_jobs_and_the_latest_attempt() -> None:
    text = (
        "11|conveyor-0123abcd-1|PREEMPTED|None|q1\n"
        "12|conveyor-0123abcd-2|PENDING|Resources|q1\n"
        "13|wrap|RUNNING|None|(null)\n"
        "garbage line\n"
    )
    jobs = parse_squeue(text, PREFIX)
    assert [j.job_id for j in jobs] == ["11", "12"]
    assert latest(jobs)[TASK] == Job("12", TASK, 2, "PENDING", "Resources", "q1")
    assert pending_message(latest(jobs)[TASK], 3) == (
        "pending in slurm: job 12 (Resources), attempt 2 of 3"
    )
    assert pending_message(latest(jobs)[TASK]) == "pending in slurm: job 12 (Resources), attempt 2"
    assert pending_message(jobs[0], 3) == "pending in slurm: job 11 (None)"


def test_the_newest_job_wins_even_of_a_lower_attempt() -> None:
    """A task reset (its counter cleared) and run again: its new job is attempt 1, while the
    old attempt 2 still lingers in squeue."""
    text = "20|conveyor-0123abcd-2|COMPLETED|None|q1\n31|conveyor-0123abcd-1|PENDING|None|q1\n"
    assert latest(parse_squeue(text, PREFIX))[TASK].job_id == "31"


RUNNING = TaskView("in_progress", "started by conveyor execute")
STOPPING = TaskView("in_progress", "stopping")
SHUTDOWN = TaskView("stopped", "", "agent shutdown")
KILLED = TaskView("failed", "", "killed by signal 15 (SIGTERM: terminated)")


@pytest.mark.parametrize(
    ("the_job", "task", "act"),
    [
        (job("PENDING"), RUNNING, Act.SHOW_PENDING),
        (job("RUNNING"), RUNNING, Act.NOTHING),
        (job("PENDING"), STOPPING, Act.CANCEL),
        (job("PENDING"), TaskView("stopped", "", "aborted by user"), Act.CANCEL),
        (job("RUNNING"), STOPPING, Act.ESCALATE),
        (job("COMPLETED"), TaskView("completed"), Act.FORGET),
        (job("FAILED"), TaskView("failed", "", "exit code 1"), Act.FORGET),
        (job("CANCELLED"), TaskView("stopped", "", "aborted by user"), Act.FORGET),
        (job("TIMEOUT"), SHUTDOWN, Act.FAILED),
        (job("TIMEOUT"), RUNNING, Act.FAILED),
        (job("TIMEOUT"), TaskView("completed"), Act.FORGET),
        (job("PREEMPTED"), SHUTDOWN, Act.REQUEUE),
        (job("NODE_FAIL"), KILLED, Act.REQUEUE),  # Slurm's TERM reached the task itself
        (job("TIMEOUT"), KILLED, Act.FAILED),
        (job("PREEMPTED"), TaskView("stopped", "", "aborted by user"), Act.FORGET),
        (job("NODE_FAIL"), RUNNING, Act.REQUEUE),
        (job("NODE_FAIL", attempt=3), RUNNING, Act.REQUEUE),  # the cap is the policy's
        (job("CANCELLED"), STOPPING, Act.STOPPED),
        (job("CANCELLED"), RUNNING, Act.FAILED),  # cancelled by someone else, no status
        (job("CANCELLED"), SHUTDOWN, Act.FAILED),  # ... or execute's "agent shutdown"
        (job("CANCELLED", reason="SystemFailure"), SHUTDOWN, Act.REQUEUE),  # by the cluster
        (job("FAILED", reason="NodeDown"), RUNNING, Act.REQUEUE),
        (job("FAILED", reason="NonZeroExitCode"), RUNNING, Act.FAILED),  # conveyor's own
        (job(""), RUNNING, Act.REQUEUE),  # vanished without an accounting record: lost
        (job(""), TaskView("failed", "", "exit code 1"), Act.FORGET),  # ... after its end
        # a user's stop stands, whatever ended the job afterwards
        (job("PREEMPTED"), STOPPING, Act.STOPPED),
        (job("TIMEOUT"), STOPPING, Act.STOPPED),
        (job(""), STOPPING, Act.STOPPED),
        # the task moved on to a later attempt (requeued by execute's or the glue's policy)
        (job("RUNNING"), TaskView("queued", "", "", attempt=2), Act.FORGET),
        (job("COMPLETED"), TaskView("in_progress", "", "", attempt=2), Act.FORGET),
        (job("PENDING", attempt=2), TaskView("in_progress", "", "", attempt=2), Act.SHOW_PENDING),
        # the task was deleted: its job goes, and so does the glue's record of it
        (job("PENDING"), TaskView("deleted"), Act.CANCEL),
        (job("RUNNING"), TaskView("deleted"), Act.ESCALATE),
        (job("PREEMPTED"), TaskView("deleted"), Act.STOPPED),  # (nothing to report: forgotten)
        (job("COMPLETED"), TaskView("deleted"), Act.STOPPED),
    ],
)
def test_decide(the_job: Job, task: TaskView, act: Act) -> None:
    assert decide(the_job, task).act is act


@pytest.mark.parametrize(
    ("the_job", "task", "cause", "reason"),
    [
        (job("PREEMPTED"), SHUTDOWN, Cause.SLURM_PREEMPTED, "slurm job 7 (PREEMPTED)"),
        (job("NODE_FAIL", reason="NodeDown"), KILLED, Cause.SLURM_NODE_FAILURE,
         "slurm job 7 (NODE_FAIL, NodeDown)"),
        (job("BOOT_FAIL"), RUNNING, Cause.SLURM_NODE_FAILURE, "slurm job 7 (BOOT_FAIL)"),
        (job("FAILED", reason="JobLaunchFailure"), RUNNING, Cause.SLURM_JOB_LOST,
         "slurm job 7 (FAILED, JobLaunchFailure)"),
        (job("", reason="None"), RUNNING, Cause.SLURM_JOB_LOST, "slurm job 7 (vanished)"),
    ],
)  # fmt: skip
def test_a_requeue_carries_its_cause_and_what_slurm_said(
    the_job: Job, task: TaskView, cause: Cause, reason: str
) -> None:
    decision = decide(the_job, task)
    assert (decision.act, decision.cause, decision.reason) == (Act.REQUEUE, cause, reason)


def test_reasons_name_the_job_and_what_slurm_said() -> None:
    assert decide(job("TIMEOUT"), SHUTDOWN).reason == (
        "slurm job 7 reached its time limit (TIMEOUT)"
    )
    assert decide(job("FAILED"), RUNNING).reason == (
        "slurm job 7 ended (failed) without a final status"
    )
    assert decide(job("CANCELLED"), SHUTDOWN).reason == (
        "slurm job 7 was cancelled in slurm, not by conveyor"
    )
    assert decide(job("PREEMPTED"), STOPPING).reason == "aborted by user"


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("sbatch failed (1): sbatch: error: Batch job submission failed: Unable to contact "
         "slurm controller (connect failure)", True),
        ("squeue failed (1): slurm_load_jobs error: Socket timed out on send/recv operation", True),
        ("sbatch did not answer within 60 s", True),
        ("sbatch failed (1): sbatch: error: Batch job submission failed: Invalid partition name "
         "specified", False),
        ("sbatch failed (1): sbatch: error: Batch job submission failed: Requested node "
         "configuration is not available", False),
    ],
)  # fmt: skip
def test_a_controller_away_is_told_from_a_refusal(message: str, transient: bool) -> None:
    assert is_transient(message) is transient
