"""Task management from another process: get_tasks filters, tags, comments, mark_stopped on a
running task, mark_failed, dequeue and reset (examples/services/cleanup & friends)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import api_call
from tests.integration.daemon.support import wait_for
from tests.sdk.support import Plane, console_text, run, task_doc, wait_status

pytestmark = pytest.mark.slow

# A task that runs until it is stopped (at most a minute), run remotely on `default`.
RUNNER = """
import time
from clearml import Task
task = Task.init(project_name="sdk/manage", task_name="{name}")
emit(task.id)
task.execute_remotely(queue_name="default", exit_process=True)
for i in range(600):
    print(f"tick {{i}}", flush=True)
    time.sleep(0.1)
"""

STOP = """
from clearml import Task
task = Task.get_task(task_id="{task}")
task.{how}()
emit(task.get_status())
"""

MANAGE = """
from clearml import Task
a = Task.create(project_name="sdk/manage", task_name="filter-a")
b = Task.create(project_name="sdk/manage", task_name="filter-b")
a.add_tags(["gold"])
a.set_comment("picked by hand")
Task.enqueue(b, queue_name="parked")
queued = Task.get_task(task_id=b.id).get_status()
Task.dequeue(b)
dequeued = Task.get_task(task_id=b.id).get_status()
a.mark_started(force=True)
a.mark_completed(force=True)
a.reset(force=True)
gold = Task.get_tasks(project_name="sdk/manage", tags=["gold"])
by_name = Task.get_tasks(project_name="sdk/manage", task_name="filter-b")
created = Task.get_tasks(project_name="sdk/manage", task_filter={"status": ["created"]})
emit({"a": a.id, "b": b.id, "queued": queued, "dequeued": dequeued,
       "reset": Task.get_task(task_id=a.id).get_status(),
       "gold": [t.id for t in gold], "by_name": [t.id for t in by_name],
       "created": [t.id for t in created],
       "comment": Task.get_task(task_id=a.id).comment})
"""


def start_running(plane: Plane, name: str) -> str:
    task_id: str = run(plane, RUNNER.format(name=name))
    wait_for(lambda: "tick 3" in console_text(plane.server, task_id), 180, f"{name} to run")
    return task_id


def test_filters_tags_comments_dequeue_reset(plane: Plane) -> None:
    api_call(plane.server, "queues.create", {"name": "parked"})
    out: dict[str, Any] = run(plane, MANAGE)
    assert out["queued"] == "queued" and out["dequeued"] == "created"
    assert out["reset"] == "created"
    assert out["gold"] == [out["a"]]
    assert out["by_name"] == [out["b"]]
    assert {out["a"], out["b"]} <= set(out["created"])
    assert out["comment"] == "picked by hand"


def test_mark_stopped_on_a_running_task(plane: Plane) -> None:
    task_id = start_running(plane, "to stop")
    run(plane, STOP.format(task=task_id, how="mark_stopped"))
    doc = wait_status(plane, task_id, timeout=60)
    assert doc["status"] == "stopped"
    assert "tick 599" not in console_text(plane.server, task_id)


def worker_done_with(plane: Plane, task_id: str) -> bool:
    workers = api_call(plane.server, "workers.get_all", {})["workers"]
    return not any(task_id in str(w.get("task") or "") for w in workers)


def test_mark_failed_on_a_running_task_stays_failed(plane: Plane) -> None:
    task_id = start_running(plane, "to fail")
    run(plane, STOP.format(task=task_id, how="mark_failed"))
    wait_for(lambda: worker_done_with(plane, task_id), 60, "the agent to let the task go")
    assert task_doc(plane.server, task_id)["status"] == "failed"
