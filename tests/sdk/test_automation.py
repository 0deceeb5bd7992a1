"""examples/automation: a base task run locally, cloned, edited, enqueued, waited on, read back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sdk.support import Plane, console_text, run

pytestmark = pytest.mark.slow

BASE = """
from clearml import Task
task = Task.init(project_name="sdk/automation", task_name="base")
params = task.connect({"lr": 0.1, "epochs": 3})
lr = float(params["lr"])
for i in range(int(params["epochs"])):
    task.get_logger().report_scalar("loss", "train", value=lr * (i + 1), iteration=i)
print(f"trained with lr {params['lr']}")
task.close()
emit(task.id)
"""

# task_piping_example.py / manual_random_param_search_example.py, reduced to one clone.
CLONE = """
from clearml import Task
template = Task.get_task(task_id="{base}")
cloned = Task.clone(source_task=template, name="base lr 0.5")
cloned.set_parameters({{"General/lr": 0.5}})
Task.enqueue(cloned, queue_name="default")
cloned.wait_for_status(
    status=[Task.TaskStatusEnum.completed],
    raise_on_status=(Task.TaskStatusEnum.failed, Task.TaskStatusEnum.stopped),
    check_interval_sec=1,
)
cloned.reload()
scalars = cloned.get_reported_scalars()
emit({{"id": cloned.id, "status": cloned.get_status(), "params": cloned.get_parameters(),
       "loss": scalars["loss"]["train"]["y"], "last": cloned.get_last_scalar_metrics()}})
"""


@pytest.fixture(scope="module")
def base_task(plane: Plane) -> str:
    task_id: str = run(plane, BASE)
    return task_id


def test_clone_set_parameters_enqueue_wait_read(plane: Plane, base_task: str) -> None:
    out: dict[str, Any] = run(plane, CLONE.format(base=base_task), timeout=300)
    text = console_text(plane.server, out["id"])
    assert out["status"] == "completed", text
    assert out["params"]["General/lr"] == "0.5"
    assert "trained with lr 0.5" in text
    assert out["loss"] == [0.5, 1.0, 1.5]
    assert out["last"]["loss"]["train"]["last"] == 1.5
