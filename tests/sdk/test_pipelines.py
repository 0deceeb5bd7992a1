"""examples/pipeline: pipelines from tasks, functions and decorators on the `services` and
`default` agents: steps run remotely, artifacts pass between them, a failing step fails the run."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import api_call, result_of, run_sdk
from tests.sdk.support import PRELUDE, Plane, console_text, run, task_doc, tasks_named, wait_status

pytestmark = pytest.mark.slow

# The step tasks of pipeline_from_tasks.py (step1_dataset_artifact.py, step2_...), tiny.
BASE_STEPS = '''
from pathlib import Path
from clearml import Task
Path("step1.py").write_text("""
from clearml import Task
task = Task.init(project_name="sdk/pipe-tasks", task_name="step1")
args = task.connect({"n": 3})
data = list(range(int(args["n"])))
task.upload_artifact("data", artifact_object=data)
print("step1 made", data)
""")
Path("step2.py").write_text("""
from clearml import Task
task = Task.init(project_name="sdk/pipe-tasks", task_name="step2")
args = task.connect({"data_task": ""})
data = Task.get_task(task_id=args["data_task"]).artifacts["data"].get()
print("step2 sum", sum(data))
task.get_logger().report_scalar("sum", "sum", value=sum(data), iteration=0)
""")
ids = {}
for name in ("step1", "step2"):
    base = Task.create(project_name="sdk/pipe-tasks", task_name=name, script=f"{name}.py",
                       packages=["clearml==2.1.12"])
    ids[name] = base.id
emit(ids)
'''

FROM_TASKS = """
from clearml import PipelineController
pipe = PipelineController(name="from-tasks", project="sdk/pipelines", version="1.0",
                          add_pipeline_tags=False)
pipe.set_default_execution_queue("default")
pipe.add_parameter("n", 5)
pipe.add_step(name="stage_data", base_task_id="{step1}",
              parameter_override={{"General/n": "${{pipeline.n}}"}})
pipe.add_step(name="stage_sum", parents=["stage_data"], base_task_id="{step2}",
              parameter_override={{"General/data_task": "${{stage_data.id}}"}})
emit(pipe.id)
pipe.start(queue="services")
"""

FUNCTIONS = (
    PRELUDE
    + """
from clearml import PipelineController, Task

def make(n):
    return list(range(int(n)))

def total(data):
    print("total of", data)
    return sum(data)

pipe = PipelineController(name="from-functions", project="sdk/pipelines", version="1.0",
                          add_pipeline_tags=False)
pipe.set_default_execution_queue("default")
pipe.add_parameter("n", 4)
pipe.add_function_step(name="make", function=make, function_kwargs=dict(n="${pipeline.n}"),
                       function_return=["data"], cache_executed_step=CACHE)
pipe.add_function_step(name="total", function=total, function_kwargs=dict(data="${make.data}"),
                       function_return=["total"], cache_executed_step=CACHE)
pipe.start_locally(run_pipeline_steps_locally=False)
step = {name: node.executed for name, node in pipe.get_pipeline_dag().items()}
# A basic-type return value is stored as a parameter of the step ("return/total"), not an
# artifact (clearml's function-step template).
params = Task.get_task(task_id=step["total"]).get_parameters(cast=True)
emit({"id": pipe.id, "steps": step,
      "total": next(v for k, v in params.items() if k.endswith("/total"))})
"""
)

FAILING = """
from clearml import PipelineController

def explode(x):
    raise RuntimeError(f"step exploded on {x}")

pipe = PipelineController(name="failing", project="sdk/pipelines", version="1.0",
                          add_pipeline_tags=False)
pipe.set_default_execution_queue("default")
pipe.add_function_step(name="explode", function=explode, function_kwargs=dict(x=1),
                       function_return=["y"], cache_executed_step=False)
emit(pipe.id)
pipe.start(queue="services")
"""

DECORATORS = """
from clearml import PipelineDecorator, Task

@PipelineDecorator.component(return_values=["data"], cache=CACHE)
def make(n):
    return list(range(n))

@PipelineDecorator.component(return_values=["total"], cache=CACHE)
def total(data):
    print("total of", data)
    return sum(data)

@PipelineDecorator.pipeline(name="from-decorators", project="sdk/pipelines", version="1.0",
                            pipeline_execution_queue="services", add_pipeline_tags=False)
def flow(n=3):
    result = total(make(n))
    print(f"pipeline result {result}")
    Task.current_task().upload_artifact("result", artifact_object=result)

if __name__ == "__main__":
    PipelineDecorator.set_default_execution_queue("default")
    flow(n=6)
"""


@pytest.fixture(scope="module")
def base_steps(plane: Plane) -> dict[str, str]:
    ids: dict[str, str] = run(plane, BASE_STEPS)
    return ids


def children(plane: Plane, controller: str) -> dict[str, dict[str, Any]]:
    data = api_call(
        plane.server,
        "tasks.get_all",
        {"parent": controller, "only_fields": ["id", "name", "status", "last_worker"]},
    )
    return {t["name"]: t for t in data["tasks"]}


def story(plane: Plane, controller: str) -> str:
    """The controller's console and each step's, for a failure message."""
    parts = [f"--- controller {controller}\n{console_text(plane.server, controller)[-4000:]}"]
    for name, step in children(plane, controller).items():
        text = console_text(plane.server, step["id"])
        parts.append(f"--- {name} {step['status']}\n{text[-3000:]}")
    return "\n".join(parts)


def test_pipeline_from_tasks_controller_on_services(
    plane: Plane, base_steps: dict[str, str]
) -> None:
    controller = run(plane, FROM_TASKS.format(**base_steps))
    doc = wait_status(plane, controller, timeout=300)
    assert doc["status"] == "completed", (doc["status_reason"], story(plane, controller))
    assert doc["last_worker"].startswith("test-agent-services")
    steps = children(plane, controller)
    assert set(steps) == {"stage_data", "stage_sum"}, steps
    for step in steps.values():
        assert step["status"] == "completed"
        assert step["last_worker"].startswith("test-agent-default")
    assert "step2 sum 10" in console_text(plane.server, steps["stage_sum"]["id"])


def test_pipeline_from_functions_started_locally(plane: Plane) -> None:
    proc = run_sdk(FUNCTIONS.replace("CACHE", "False"), plane.env, timeout=300)
    if proc.returncode != 0:
        controller = next(iter(tasks_named(plane, "^from-functions$")))["id"]
        raise AssertionError(f"{proc.stderr[-2000:]}\n{story(plane, controller)}")
    out = result_of(proc)
    assert out["total"] == 6
    assert task_doc(plane.server, out["id"])["status"] == "completed"
    for step in out["steps"].values():
        assert task_doc(plane.server, step)["last_worker"].startswith("test-agent-default")


def test_pipeline_with_a_failing_step_fails(plane: Plane) -> None:
    controller = run(plane, FAILING)
    doc = wait_status(plane, controller, timeout=300)
    steps = children(plane, controller)
    assert steps["explode"]["status"] == "failed"
    assert "step exploded on 1" in console_text(plane.server, steps["explode"]["id"])
    assert doc["status"] == "failed", doc["status_reason"]


def test_pipeline_from_decorators_controller_on_services(plane: Plane) -> None:
    proc = run_sdk(DECORATORS.replace("CACHE", "False"), plane.env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    controller = max(tasks_named(plane, "^from-decorators$"), key=lambda t: t["id"])
    doc = wait_status(plane, controller["id"], timeout=300)
    text = console_text(plane.server, controller["id"])
    assert doc["status"] == "completed", (doc["status_reason"], text)
    assert "pipeline result 15" in text, story(plane, controller["id"])


COMPLETED_ELSEWHERE = """
from clearml import Task
Task.init(project_name="sdk/unrelated", task_name="done").close()
"""


def test_pipeline_from_functions_with_step_cache(plane: Plane) -> None:
    script = FUNCTIONS.replace("CACHE", "True").replace('name="from-functions"', 'name="cached"')
    proc = run_sdk(COMPLETED_ELSEWHERE + script, plane.env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result_of(proc)["total"] == 6


CACHED_DECORATOR = """
from clearml import PipelineDecorator

@PipelineDecorator.component(return_values=["squares"], cache=True)
def cached_squares(n):
    print("computing squares of", n)
    return [i * i for i in range(n)]

@PipelineDecorator.pipeline(name="cached-decorators", project="sdk/pipelines", version="1.0",
                            pipeline_execution_queue=None, add_pipeline_tags=False)
def flow(n=4):
    emit(sum(cached_squares(n)))

if __name__ == "__main__":
    PipelineDecorator.set_default_execution_queue("default")
    flow(n=4)
"""


def test_decorator_component_cache_reuses_the_step(plane: Plane) -> None:
    """`component(cache=True)`: a second run with the same code and arguments makes no new step
    task (the controller runs here, so the second run costs no remote start at all)."""
    assert run(plane, CACHED_DECORATOR, timeout=300) == 14
    (first,) = tasks_named(plane, "^cached_squares$")
    assert task_doc(plane.server, first["id"])["status"] == "completed"
    assert run(plane, CACHED_DECORATOR, timeout=300) == 14
    assert [t["id"] for t in tasks_named(plane, "^cached_squares$")] == [first["id"]]
