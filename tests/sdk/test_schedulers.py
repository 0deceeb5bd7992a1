"""examples/scheduler: a TaskScheduler as a services task launches its job on `default` at once
(execute_immediately), and stops when the user stops it: a bounded run of a forever service."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import api_call, run_sdk
from tests.integration.daemon.support import wait_for
from tests.sdk.support import Plane, console_text, run, tasks_named, wait_status
from tests.sdk.test_automation import BASE

pytestmark = pytest.mark.slow

SCHEDULE = """
from clearml.automation import TaskScheduler
scheduler = TaskScheduler(sync_frequency_minutes=0.1, force_create_task_name="scheduler",
                          force_create_task_project="sdk/services")
scheduler.add_task(schedule_task_id="{base}", queue="default", name="nightly", hour=23,
                   execute_immediately=True, task_parameters={{"General/lr": "0.9"}})
scheduler.start_remotely(queue="services")
"""


def launched_with(plane: Plane, lr: str) -> dict[str, Any] | None:
    tasks = api_call(
        plane.server, "tasks.get_all", {"only_fields": ["id", "status", "hyperparams"]}
    )["tasks"]
    for task in tasks:
        value = task.get("hyperparams", {}).get("General", {}).get("lr", {}).get("value")
        if value == lr and task["status"] in ("completed", "failed", "stopped"):
            found: dict[str, Any] = task
            return found
    return None


def test_task_scheduler_as_a_services_task(plane: Plane) -> None:
    base = run(plane, BASE)
    proc = run_sdk(SCHEDULE.format(base=base), plane.env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (scheduler,) = tasks_named(plane, "^scheduler$")
    job = wait_for(lambda: launched_with(plane, "0.9"), 300, "the scheduled job", every=1)
    assert job["status"] == "completed", console_text(plane.server, job["id"])
    assert "trained with lr 0.9" in console_text(plane.server, job["id"])
    doc = api_call(plane.server, "tasks.get_by_id", {"task": scheduler["id"]})["task"]
    assert doc["status"] == "in_progress"  # a service runs until stopped
    assert doc["last_worker"].startswith("test-agent-services")
    api_call(plane.server, "tasks.stop", {"task": scheduler["id"]})
    assert wait_status(plane, scheduler["id"], timeout=60)["status"] == "stopped"


TRIGGER = """
from clearml import Task
from clearml.automation import TriggerScheduler
# The watched project must exist before the trigger names it (else it watches every project).
Task.init(project_name="sdk/watched", task_name="before the trigger").close()
trigger = TriggerScheduler(pooling_frequency_minutes=0.05, sync_frequency_minutes=0.1,
                           force_create_task_name="trigger",
                           force_create_task_project="sdk/services")
trigger.add_task_trigger(name="on-completed", schedule_task_id="{base}",
                         schedule_queue="default", trigger_project="sdk/watched",
                         trigger_on_status=["completed"],
                         task_parameters={{"General/lr": "0.8"}})
trigger.start_remotely(queue="services")
"""

WATCHED = """
from clearml import Task
task = Task.init(project_name="sdk/watched", task_name="watched")
task.close()
emit(task.id)
"""


def test_trigger_scheduler_fires_on_a_task_status(plane: Plane) -> None:
    base = run(plane, BASE)
    proc = run_sdk(TRIGGER.format(base=base), plane.env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (trigger,) = tasks_named(plane, "^trigger$")
    # Its first poll takes "now" as the reference: only later changes fire.
    wait_for(
        lambda: "Sleeping until the next pool" in console_text(plane.server, trigger["id"]),
        180, "the trigger's first poll", every=1,
    )  # fmt: skip
    assert launched_with(plane, "0.8") is None
    run(plane, WATCHED)
    job = wait_for(lambda: launched_with(plane, "0.8"), 240, "the triggered job", every=1)
    assert job["status"] == "completed", console_text(plane.server, job["id"])
    assert "trained with lr 0.8" in console_text(plane.server, job["id"])
    api_call(plane.server, "tasks.stop", {"task": trigger["id"]})
    assert wait_status(plane, trigger["id"], timeout=60)["status"] == "stopped"
