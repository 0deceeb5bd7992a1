"""The glue's side of the retry policy, driven in-process against a real server and the real
Slurm commands: a controller that does not answer ``sbatch``, a glue restarted with a task whose
job is nowhere, and a user's stop that the glue's own status updates never erase."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.api.client import ApiClient
from agent.config.settings import Settings
from agent.pipeline.host import ServerAccess
from agent.server.embedded import EmbeddedServer
from agent.slurm.glue import Glue, Tracked, task_view
from agent.slurm.slurmcli import SlurmCli, SlurmError
from agent.slurm.states import Act, Decision, Job, TaskView, decide
from tests.helpers import api_call
from tests.integration.daemon.support import console_text, create_task, task_doc
from tests.slurm.conftest import slurm_conf

pytestmark = pytest.mark.slurm
WORKER = "test-slurm-inprocess"
STALE = TaskView("in_progress", "submitted to slurm: job 1")  # read before the user's stop


@pytest.fixture
async def glue(server: EmbeddedServer, tmp_path: Path, cluster: Path) -> AsyncIterator[Glue]:
    """A glue object (not started) with its own job prefix and queue, on the module's server."""
    creds = server.credentials
    queue = f"retry-{uuid.uuid4().hex[:6]}"
    api_call(server, "queues.create", {"name": queue})
    settings = Settings(
        queues=(queue,),
        worker_id=WORKER,
        slurm_job_prefix=f"cvr{uuid.uuid4().hex[:6]}-",
        slurm_shared_dir=tmp_path / "shared",
        slurm_conveyor="/bin/false",  # no job of these tests may run a task
    )
    access = ServerAccess(server.url, "", "", creds.access_key, creds.secret_key)
    async with ApiClient(
        server.url, creds.access_key, creds.secret_key, worker_id=WORKER, retry_for=10
    ) as api:
        yield Glue(settings, api, SlurmCli(), access, WORKER)
        await api.unregister_worker(WORKER)


def queued_task(glue: Glue, server: EmbeddedServer, name: str) -> str:
    script = {"diff": "print('never runs')\n"}
    return create_task(server, name, script, queue=glue.settings.queues[0])


async def started_by(glue: Glue, task_id: str) -> None:
    """The task popped and started by the glue's worker, as `_submit` leaves it."""
    queue_id = await glue.api.queue_id(glue.settings.queues[0])
    await glue.api.register_worker(WORKER, [queue_id])
    assert await glue.api.get_next_task(queue_id, WORKER) == task_id
    await glue.api.started(task_id, message="submitting to slurm")


def queue_entries(glue: Glue, server: EmbeddedServer) -> list[str]:
    name = glue.settings.queues[0]
    queue_id = api_call(server, "queues.get_all", {"name": f"^{name}$"})["queues"][0]["id"]
    data = api_call(server, "queues.get_by_id", {"queue": queue_id})
    return [e["task"] for e in data["queue"]["entries"]]


async def test_a_controller_that_does_not_answer_sbatch_requeues_at_the_front(
    glue: Glue, server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """squeue answered, then sbatch could not reach the controller (the real sbatch, given a
    slurm.conf whose controller port nobody listens on): the policy requeues the task at the
    front as attempt 2, with the closing line; the poll ends with the error."""
    await glue.start()
    first, second = queued_task(glue, server, "unlucky"), queued_task(glue, server, "next-in-line")
    bad = tmp_path / "etc"
    bad.mkdir()
    conf = Path(slurm_conf()).read_text().splitlines()
    lines = [("SlurmctldPort=6999" if x.startswith("SlurmctldPort=") else x) for x in conf]
    (bad / "slurm.conf").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(bad / "slurm.conf"))
    with pytest.raises(SlurmError, match="Unable to contact slurm controller"):
        await glue._claim()
    doc = task_doc(server, first)
    assert (doc["status"], doc["status_reason"]) == ("queued", "slurm unreachable"), doc
    assert doc["status_message"] == "slurm unreachable: requeued (attempt 2 of 3)"
    assert doc["runtime"]["conveyor_attempt"] == 2
    assert queue_entries(glue, server)[:2] == [first, second]
    closing = console_text(server, first).splitlines()[-1]
    assert closing.startswith("conveyor: attempt 1 failed: the slurm controller did not answer: ")
    assert closing.endswith("; requeued (attempt 2 of 3)"), closing
    assert not list((glue.settings.slurm_shared_dir / "secrets").glob("*.key"))
    assert glue.tracked == {}


async def test_a_restarted_glue_requeues_a_started_task_that_has_no_job(
    glue: Glue, server: EmbeddedServer
) -> None:
    task_id = queued_task(glue, server, "orphaned")
    await started_by(glue, task_id)
    await glue.start()  # finds no job named after the task in Slurm
    doc = task_doc(server, task_id)
    assert (doc["status"], doc["status_reason"]) == ("queued", "slurm job lost"), doc
    assert doc["runtime"]["conveyor_attempt"] == 2
    assert console_text(server, task_id).splitlines()[-1] == (
        "conveyor: attempt 1 lost: its slurm job was lost: the slurm glue restarted and found "
        "no job for it; requeued (attempt 2 of 3)"
    )


async def test_the_glues_pending_message_never_erases_a_users_stop(
    glue: Glue, server: EmbeddedServer
) -> None:
    """The race docs/slurm.md used to list: the glue read the task, the user stopped it, the
    glue then sets its pending message from what it read."""
    await glue.start()
    requested, stopped = (
        queued_task(glue, server, "stop-requested"),
        queued_task(glue, server, "stopped"),
    )
    for task_id in (requested, stopped):
        await started_by(glue, task_id)
    await glue.api.status_report(WORKER, queues=list(glue.queues))
    api_call(server, "tasks.stop", {"task": requested})  # its worker is alive: "stopping"
    await glue.api.stopped(stopped, "aborted by user")  # ended outright
    for task_id in (requested, stopped):
        job = Job("1", task_id, 1, "PENDING", "Resources", "")
        await glue._apply(task_id, Tracked(job), STALE, Decision(Act.SHOW_PENDING))
    doc = task_doc(server, requested)
    assert (doc["status"], doc["status_message"]) == ("in_progress", "stopping"), doc
    assert decide(job, task_view(doc)).act is Act.CANCEL  # the next poll cancels the job
    doc = task_doc(server, stopped)
    assert (doc["status"], doc["status_reason"]) == ("stopped", "aborted by user"), doc
    await glue.api.stopped(requested, "aborted by user")


async def test_a_stop_that_arrives_before_the_requeue_stands(
    glue: Glue, server: EmbeddedServer
) -> None:
    """The job was preempted and the glue decided on a requeue from what it read; the user's
    stop landed meanwhile: the glue reads the task afresh and leaves the stop as it is."""
    await glue.start()
    task_id = queued_task(glue, server, "stopped-then-preempted")
    await started_by(glue, task_id)
    await glue.api.status_report(WORKER, queues=list(glue.queues))
    job = Job("1", task_id, 1, "PREEMPTED", "None", "")
    decision = decide(job, STALE)
    assert decision.act is Act.REQUEUE
    api_call(server, "tasks.stop", {"task": task_id})
    await glue._apply(task_id, Tracked(job), STALE, decision)
    doc = task_doc(server, task_id)
    assert (doc["status"], doc["status_message"]) == ("in_progress", "stopping"), doc
    assert doc.get("runtime", {}).get("conveyor_attempt") in (None, 1), doc
    assert task_id not in queue_entries(glue, server)
    await glue.api.stopped(task_id, "aborted by user")


async def test_a_stop_that_arrives_before_a_time_limit_failure_stands(
    glue: Glue, server: EmbeddedServer
) -> None:
    """The same race with a failure the glue forces over Slurm's TERM: read afresh, the stop
    wins (``stopped``, ``aborted by user``), not ``failed: … time limit``."""
    await glue.start()
    task_id = queued_task(glue, server, "stopped-then-timed-out")
    await started_by(glue, task_id)
    await glue.api.status_report(WORKER, queues=list(glue.queues))
    job = Job("1", task_id, 1, "TIMEOUT", "TimeLimit", "")
    decision = decide(job, STALE)
    assert decision.act is Act.FAILED
    api_call(server, "tasks.stop", {"task": task_id})
    await glue._apply(task_id, Tracked(job), STALE, decision)
    doc = task_doc(server, task_id)
    assert (doc["status"], doc["status_reason"]) == ("stopped", "aborted by user"), doc
