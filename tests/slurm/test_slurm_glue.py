"""``conveyor slurm`` against a real single-node Slurm: tasks become batch jobs, statuses come
back honest (pending reason, time limit, abort), a killed glue neither loses nor doubles a job,
and the control plane's secret stays out of everything Slurm keeps."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import (
    CONVEYOR,
    console_text,
    create_task,
    task_doc,
    wait_final,
    wait_for,
)
from tests.slurm.conftest import CAPPED, QUEUE, GlueProcess, slurm

pytestmark = pytest.mark.slurm


def literal_task(
    server: EmbeddedServer,
    name: str,
    code: str,
    queue: str = QUEUE,
    conveyor: dict[str, str] | None = None,
    **slurm_params: str,
) -> str:
    """A literal-script task; ``slurm_params`` its Slurm section, ``conveyor`` its Conveyor one
    (the retry policy's parameters)."""
    sections = {"Slurm": slurm_params, "Conveyor": conveyor or {}}
    hyperparams = {
        section: {k: {"section": section, "name": k, "value": v} for k, v in values.items()}
        for section, values in sections.items()
        if values
    }
    fields: dict[str, Any] = {"hyperparams": hyperparams} if hyperparams else {}
    script = {"diff": code, "entry_point": f"{name}.py"}
    return create_task(server, name, script, queue=queue, **fields)


def jobs_of(glue: GlueProcess, task_id: str) -> list[str]:
    """Every job the glue submitted for the task: one output file per job (%x-%j.out)."""
    return sorted(p.name for p in (glue.shared / "logs").glob(f"{glue.prefix}{task_id}-*.out"))


def job_id_of(glue: GlueProcess, task_id: str) -> str:
    def find() -> str | None:
        for line in slurm("squeue", "--states=all", "--noheader", "--format=%i|%j").splitlines():
            job_id, _, name = line.strip().partition("|")
            if name.startswith(f"{glue.prefix}{task_id}-"):
                return job_id
        return None

    found: str = wait_for(find, 60, f"a slurm job for {task_id}", every=0.2)
    return found


def slurm_state(job_id: str) -> str:
    out = slurm(
        "squeue", "--states=all", "--noheader", "--format=%T", f"--jobs={job_id}", check=False
    )
    return out.strip()


def stored_by_slurm(cluster: Path, secret: str) -> str:
    """The files under the cluster's root (state: stored scripts and environments; spool; logs)
    that contain ``secret``."""
    found = subprocess.run(
        ["grep", "-rlF", "--binary-files=text", secret, str(cluster)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    return found.stdout


@pytest.fixture(scope="module", autouse=True)
def time_limited(glue: GlueProcess, server: EmbeddedServer) -> str:
    """A task with a 5 s time limit, queued before the module's first test: Slurm enforces
    limits on its own schedule (up to a minute late), so the other tests run meanwhile."""
    return literal_task(
        server, "slow", "import time\nprint('slow', flush=True)\ntime.sleep(600)\n", time="0:05"
    )


def test_cli_task_runs_as_a_job_and_the_secret_stays_out_of_slurm(
    glue: GlueProcess, server: EmbeddedServer, cluster: Path
) -> None:
    script = glue.root / "hello.py"
    script.write_text("import time\nprint('hello from slurm', flush=True)\ntime.sleep(2)\n")
    enqueued = subprocess.run(
        [str(CONVEYOR), "enqueue", "--queue", QUEUE, str(script)],
        env=glue.env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    task_id = enqueued.stdout.strip().splitlines()[-1]
    job_id = job_id_of(glue, task_id)
    wait_for(lambda: slurm_state(job_id) == "RUNNING", 60, "the job to run", every=0.2)
    secret = server.credentials.secret_key
    shown = slurm("scontrol", "show", "job", "-dd", job_id)
    script = slurm("scontrol", "write", "batch_script", job_id, "-")
    assert f"{glue.prefix}{task_id}-1" in shown
    assert "execute --id" in script
    assert stored_by_slurm(cluster, secret) == "", "the secret is in Slurm's state"
    doc = wait_final(server, task_id, timeout=120)
    assert doc["status"] == "completed", doc
    assert "hello from slurm" in console_text(server, task_id)
    output = (glue.shared / "logs" / f"{glue.prefix}{task_id}-1-{job_id}.out").read_text()
    assert secret not in shown and secret not in script and secret not in output
    assert stored_by_slurm(cluster, secret) == "", "the secret is in Slurm's state"
    assert not list((glue.shared / "secrets").glob("*.key")), "secret hand-over files left"


def test_a_task_asking_for_what_it_may_not_fails_before_any_job(
    glue: GlueProcess, server: EmbeddedServer
) -> None:
    task_id = literal_task(server, "greedy", "print('never')\n", partition="big", gres="gpu:1")
    doc = wait_final(server, task_id, timeout=30)
    assert doc["status"] == "failed", doc
    assert "task section Slurm: 'partition' is not allowed" in doc["status_reason"], doc
    assert jobs_of(glue, task_id) == []


def test_gpu_tasks_beyond_the_node_run_one_after_the_other(
    glue: GlueProcess, server: EmbeddedServer
) -> None:
    code = (
        "import time\nprint('start', time.time(), flush=True)\n"
        "time.sleep(3)\nprint('end', time.time())\n"
    )
    first = literal_task(server, "gpu-a", code, gres="gpu:2")
    second = literal_task(server, "gpu-b", code, gres="gpu:2")
    messages: set[str] = set()

    def both_done() -> bool:
        for task_id in (first, second):
            messages.add(str(task_doc(server, task_id).get("status_message") or ""))
        return all(task_doc(server, t)["status"] == "completed" for t in (first, second))

    wait_for(both_done, 180, "both GPU tasks to complete", every=0.2)
    assert any(re.fullmatch(r"pending in slurm: job \d+ \(Resources\)", m) for m in messages), (
        messages
    )
    spans = []
    for task_id in (first, second):
        text = console_text(server, task_id)
        start = float(re.search(r"start ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
        end = float(re.search(r"end ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
        spans.append((start, end))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"the two 2-GPU jobs overlapped: {spans}"


def test_abort_while_pending_and_while_running(glue: GlueProcess, server: EmbeddedServer) -> None:
    code = "import time\nprint('ran', flush=True)\ntime.sleep(300)\n"
    running = literal_task(server, "hold", code, gres="gpu:2")
    pending = literal_task(server, "waits", code, gres="gpu:2")
    running_job = job_id_of(glue, running)
    pending_job = job_id_of(glue, pending)
    wait_for(lambda: "ran" in console_text(server, running), 120, "the first task to run")
    wait_for(
        lambda: "pending in slurm" in str(task_doc(server, pending).get("status_message")),
        30, "the pending message",
    )  # fmt: skip
    api_call(server, "tasks.stop", {"task": pending})
    doc = wait_final(server, pending, timeout=30)
    assert doc["status"] == "stopped", doc
    wait_for(lambda: slurm_state(pending_job) == "CANCELLED", 30, "the pending job cancelled")
    assert "ran" not in console_text(server, pending)
    api_call(server, "tasks.stop", {"task": running})
    doc = wait_final(server, running, timeout=60)
    assert doc["status"] == "stopped" and doc["status_reason"] == "aborted by user", doc
    wait_for(lambda: slurm_state(running_job) not in ("RUNNING", "COMPLETING"), 60, "the job end")


def test_killed_glue_restarts_without_losing_or_doubling_jobs(
    glue: GlueProcess, server: EmbeddedServer
) -> None:
    code = "import time\nprint('batch task', flush=True)\ntime.sleep(4)\n"
    tasks = [literal_task(server, f"many-{i}", code) for i in range(8)]
    wait_for(lambda: len(list((glue.shared / "secrets").glob("*.key"))) + sum(
        bool(jobs_of(glue, t)) for t in tasks) >= 4, 60, "jobs in flight")  # fmt: skip
    glue.kill()
    glue.start()
    for task_id in tasks:
        doc = wait_final(server, task_id, timeout=240)
        assert doc["status"] == "completed", doc
    for task_id in tasks:
        assert len(jobs_of(glue, task_id)) == 1, (task_id, jobs_of(glue, task_id))
        assert console_text(server, task_id).count("batch task") == 1


def test_a_queue_keeps_at_most_its_cap_of_jobs_in_slurm(
    glue: GlueProcess, server: EmbeddedServer
) -> None:
    tasks = [
        literal_task(server, f"capped-{i}", "import time\ntime.sleep(2)\n", queue=CAPPED)
        for i in range(4)
    ]
    names = {f"{glue.prefix}{t}-1" for t in tasks}
    most = 0

    def all_done() -> bool:
        nonlocal most
        lines = slurm("squeue", "--noheader", "--format=%j").split()
        most = max(most, sum(1 for n in lines if n in names))
        return all(task_doc(server, t)["status"] == "completed" for t in tasks)

    wait_for(all_done, 180, "the capped queue's tasks to complete", every=0.1)
    assert most == 2, f"{most} jobs of the capped queue were in Slurm at once (cap 2)"


def test_time_limit_fails_the_task_with_that_reason(
    time_limited: str, server: EmbeddedServer
) -> None:
    # Slurm's SIGTERM reaches `conveyor execute` first (it reports "stopped: agent shutdown");
    # the glue then sees TIMEOUT in its next poll and fails the task with Slurm's reason.
    wait_final(server, time_limited, timeout=150)
    doc = wait_for(
        lambda: (d := task_doc(server, time_limited))["status"] == "failed" and d, 30, "failed"
    )
    assert "time limit" in doc["status_reason"], doc


def submitted_attempts(glue: GlueProcess, task_id: str) -> list[int]:
    """The attempts the glue submitted for the task, from its log."""
    events = [json.loads(line) for line in glue.log().splitlines() if '"task submitted"' in line]
    return [int(e["attempt"]) for e in events if e["task_id"] == task_id]


def preempt(glue: GlueProcess, server: EmbeddedServer, task_id: str) -> str:
    """Wait for the task's job to run, then let a job of the urgent partition preempt it."""
    first_job = job_id_of(glue, task_id)
    wait_for(lambda: "preemptible running" in console_text(server, task_id), 120, "the run")
    slurm(
        "sbatch", "--parsable", "--partition=urgent", "--gres=gpu:2", "--output=/dev/null",
        "--job-name=urgent-preemptor", "--wrap", "sleep 2",
    )  # fmt: skip
    wait_for(lambda: slurm_state(first_job) == "PREEMPTED", 30, "PREEMPTED")
    return first_job


def assert_attempt_2_told(server: EmbeddedServer, task_id: str, lost: str) -> None:
    """The task went through the retry policy: attempt 2 on the task, attempt 1's closing line
    (``lost``: a pattern for its cause and job) and attempt 2's header, in that order."""
    doc = task_doc(server, task_id)
    assert doc["runtime"]["conveyor_attempt"] == 2, doc["runtime"]
    lines = console_text(server, task_id).splitlines()
    closing = [i for i, x in enumerate(lines) if re.fullmatch(f"conveyor: attempt 1 {lost}", x)]
    header = lines.index("conveyor: attempt 2 of 3")
    assert lines.index("conveyor: attempt 1 of 3") < closing[0] < header, lines


def test_preemption_requeues_the_task_under_the_same_id(
    glue: GlueProcess, server: EmbeddedServer
) -> None:
    """A job of the urgent partition preempts the task's job (PREEMPTED); the retry policy
    requeues the task as attempt 2 (at the front of its queue), which runs once the urgent
    job is done."""
    code = "import time\nprint('preemptible running', flush=True)\ntime.sleep(4)\n"
    task_id = literal_task(server, "preemptible", code, gres="gpu:2")
    first_job = preempt(glue, server, task_id)
    wait_for(
        lambda: task_doc(server, task_id)["status"] == "completed", 180, "attempt 2 to complete"
    )
    assert submitted_attempts(glue, task_id) == [1, 2]
    lost = (
        rf"lost: slurm preempted its job: slurm job {first_job} \(PREEMPTED\); "
        r"requeued \(attempt 2 of 3\)"
    )
    assert_attempt_2_told(server, task_id, lost)


def test_preemption_past_the_tasks_cap_fails_it_with_slurms_word(
    glue: GlueProcess, server: EmbeddedServer
) -> None:
    """``Conveyor/max_retries`` 0: the same cap as the daemon's, so a preemption fails it."""
    code = "import time\nprint('preemptible running', flush=True)\ntime.sleep(30)\n"
    task_id = literal_task(server, "no-retry", code, conveyor={"max_retries": "0"}, gres="gpu:2")
    first_job = preempt(glue, server, task_id)
    doc = wait_for(
        lambda: (d := task_doc(server, task_id))["status"] == "failed" and d, 60, "failed"
    )
    assert doc["status_reason"] == f"preempted in slurm: slurm job {first_job} (PREEMPTED)", doc
    assert "attempt 1 of 1, no retries left" in doc["status_message"], doc
    assert submitted_attempts(glue, task_id) == [1]


def test_an_exit_code_the_task_retries_on_runs_attempt_2_as_a_new_job(
    glue: GlueProcess, server: EmbeddedServer
) -> None:
    """``Conveyor/retry_on_exit_codes``: `conveyor execute` in the job requeues the task as
    attempt 2; the glue submits it as job ``…-2`` (not a second ``…-1``), and it completes."""
    code = (
        "import os, sys\nattempt = os.environ['CONVEYOR_ATTEMPT']\n"
        "print('exit-code attempt', attempt, flush=True)\nsys.exit(3 if attempt == '1' else 0)\n"
    )
    task_id = literal_task(server, "flaky", code, conveyor={"retry_on_exit_codes": "3"})
    doc = wait_for(
        lambda: (d := task_doc(server, task_id))["status"] == "completed" and d, 180, "completed"
    )
    assert doc["runtime"]["conveyor_attempt"] == 2, doc
    assert submitted_attempts(glue, task_id) == [1, 2]
    assert [n.split("-")[-2] for n in jobs_of(glue, task_id)] == ["1", "2"]
    text = console_text(server, task_id)
    assert "exit-code attempt 1" in text and "exit-code attempt 2" in text


def test_node_failure_requeues_the_task_under_the_same_id(
    glue: GlueProcess, server: EmbeddedServer
) -> None:
    """The node is set DOWN under a running job (NODE_FAIL); the retry policy requeues the
    task as attempt 2 under the same id, which completes once the node is back."""
    code = "import time\nprint('attempt running', flush=True)\ntime.sleep(4)\n"
    task_id = literal_task(server, "fragile", code)
    first_job = job_id_of(glue, task_id)
    wait_for(lambda: "attempt running" in console_text(server, task_id), 120, "the first run")
    node = socket.gethostname().split(".")[0]
    slurm("scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=conveyor-test")
    wait_for(lambda: slurm_state(first_job) == "NODE_FAIL", 30, "NODE_FAIL")

    def node_up() -> bool:
        state = slurm("sinfo", "--noheader", f"--nodes={node}", "--format=%t").strip()
        if state.startswith(("idle", "mix", "alloc")):
            return True
        # ReturnToService=2 brings it back once slurmd registers again; RESUME does it now
        slurm("scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)
        return False

    wait_for(node_up, 60, "the node back in service", every=0.5)
    wait_for(
        lambda: task_doc(server, task_id)["status"] == "completed", 180, "attempt 2 to complete"
    )
    assert submitted_attempts(glue, task_id) == [1, 2]
    lost = (
        rf"lost: its slurm node failed: slurm job {first_job} \(NODE_FAIL[^)]*\); "
        r"requeued \(attempt 2 of 3\)"
    )
    assert_attempt_2_told(server, task_id, lost)
    assert len(jobs_of(glue, task_id)) == 2
    assert f"{glue.prefix}{task_id}-2-" in " ".join(jobs_of(glue, task_id))
