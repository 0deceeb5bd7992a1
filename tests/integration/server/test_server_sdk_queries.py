"""The SDK's own queries against the embedded server (issue 20, faults 1, 2, 3, 7, 9): the
pipeline step cache, datasets in hidden projects, console paging, and unknown filters refused.

Each SDK start costs seconds, so each script checks several things and prints one RESULT.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, result_of, run_sdk, sdk_env

pytestmark = pytest.mark.slow

# pool_frequency is in minutes: the controller looks at its steps every 0.6 s, not 12 s.
PIPELINE = """
import json
from clearml import PipelineController, Task

def double(x):
    return x * 2

pipe = PipelineController(
    name="cache-pipe", project="q/pipe", version="1.0.0", pool_frequency=0.01
)
pipe.add_parameter("x", 21)
pipe.add_function_step(
    name="double", function=double, function_kwargs={{"x": "${{pipeline.x}}"}},
    function_return=["y"], cache_executed_step=True,
)
pipe.start_locally(run_pipeline_steps_locally=True)
step_id = pipe.get_pipeline_dag()["double"].executed
step = Task.get_task(task_id=step_id)
out = {{
    "pipeline": pipe.id,
    "step": step_id,
    "y": step.get_parameters().get("return/y"),
    "names": sorted(t.name for t in Task.get_tasks(project_name="q/pipe/.pipelines/cache-pipe")),
}}
earlier = "{earlier}"
if earlier:
    out["console"] = Task.get_task(task_id=earlier).get_reported_console_output(
        number_of_reports=100000
    )
    out["got"] = PipelineController.get(pipeline_project="q/pipe", pipeline_name="cache-pipe").id
    try:
        PipelineController.get(pipeline_project="q/other", pipeline_name="cache-pipe")
        out["elsewhere"] = "found"
    except ValueError as exc:
        out["elsewhere"] = str(exc)
print("RESULT " + json.dumps(out))
"""

DECORATED = """
import json
from clearml import PipelineDecorator, Task

@PipelineDecorator.component(return_values=["y"], cache=True)
def triple(x):
    return {"v": x * 3}

@PipelineDecorator.pipeline(
    name="deco-pipe", project="q/deco", version="1.0.0", pool_frequency=0.01
)
def main(x=7):
    y = triple(x)
    print("RESULT " + json.dumps({"y": y["v"], "pipeline": Task.current_task().id}))

PipelineDecorator.run_locally()
main()
"""

DATASETS = """
import json, pathlib
from clearml import Dataset, Task

src = pathlib.Path("data")
src.mkdir()
(src / "a.txt").write_text("hello")
first = Dataset.create(dataset_name="tiny", dataset_project="q/data")
first.add_files(str(src))
first.upload()
first.finalize()
second = Dataset.create(dataset_name="tiny", dataset_project="q/data", parent_datasets=[first.id])
second.upload()
second.finalize()
latest = Dataset.get(dataset_project="q/data", dataset_name="tiny")
copy = pathlib.Path(Dataset.get(dataset_id=first.id).get_local_copy())
out = {
    "first": first.id,
    "second": second.id,
    "latest": latest.id,
    "text": (copy / "a.txt").read_text(),
    "listed": Dataset.list_datasets(dataset_project="q/data"),
    "everywhere": [d["id"] for d in Dataset.list_datasets()],
}
try:
    Task.query_tasks(task_filter={"runtime.progress": {"$gt": 0}, "_allow_extra_fields_": True})
    out["refused"] = ""
except Exception as exc:
    out["refused"] = str(exc)
print("RESULT " + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path_factory.mktemp("sdk-queries") / "server.db") as srv:
        yield srv


def _completed_task(server: EmbeddedServer, name: str, **fields: Any) -> str:
    task_id: str = api_call(server, "tasks.create", {"name": name, **fields})["id"]
    api_call(server, "tasks.started", {"task": task_id})
    api_call(server, "tasks.completed", {"task": task_id})
    return task_id


def _pipeline(server: EmbeddedServer, earlier: str = "") -> dict[str, Any]:
    proc = run_sdk(PIPELINE.format(earlier=earlier), sdk_env(server), timeout=180)
    result: dict[str, Any] = result_of(proc)
    return result


def test_pipeline_step_cache_finds_only_its_own_step(server: EmbeddedServer) -> None:
    """Fault 1: the cache lookup (``_all_`` on runtime.pipeline_job_hash) must not pick an
    unrelated completed task; fault 3: the hidden ``.pipelines`` project is found by name;
    fault 7: a console read of 100,000 reports is clamped, not refused."""
    unrelated = _completed_task(server, "unrelated", runtime={"pipeline_job_hash": "other"})
    first = _pipeline(server)
    assert first["step"] != unrelated
    assert first["y"] == "2121"  # the step ran: pipeline parameters arrive as strings
    step = api_call(server, "tasks.get_by_id", {"task": first["step"]})["task"]
    assert step["status"] == "completed"
    assert step["runtime"]["pipeline_job_hash"] != "other"
    assert first["names"] == ["cache-pipe", "double"]
    body = {"name": r"^q/pipe/\.pipelines/cache-pipe$", "only_fields": ["system_tags"]}
    [project] = api_call(server, "projects.get_all", body)["projects"]
    assert "hidden" in project["system_tags"]  # found by its exact name although hidden

    second = _pipeline(server, earlier=first["pipeline"])
    assert second["step"] == first["step"]  # the same inputs: the cached step is reused
    assert second["y"] == "2121"
    assert second["names"] == ["cache-pipe", "cache-pipe #2", "double"]
    assert any("Launching step" in line for line in second["console"])
    # PipelineController.get sends the project *name* as ``pipeline_project``
    assert second["got"] in (first["pipeline"], second["pipeline"])
    assert second["elsewhere"] != "found"


def test_decorated_pipeline_steps_return_their_values(server: EmbeddedServer) -> None:
    """Fault 1, decorator form: with another completed task on the server, a cached
    component still runs and returns its value (it returned None when the cache lookup
    picked the unrelated task)."""
    _completed_task(server, "unrelated-too")
    result = result_of(run_sdk(DECORATED, sdk_env(server), timeout=180))
    assert result["y"] == 21
    steps = api_call(server, "tasks.get_all", {"name": "^triple$", "search_hidden": True})
    assert [t["status"] for t in steps["tasks"]] == ["completed"]


def test_datasets_live_in_hidden_projects(server: EmbeddedServer) -> None:
    """Fault 2: Dataset.create (its ``runtime.version`` projection) works from the first
    call; fault 3: list_datasets finds datasets in hidden ``.datasets`` projects; fault 9:
    an operator filter is refused by name, not ignored."""
    result = result_of(run_sdk(DATASETS, sdk_env(server), timeout=180))
    assert result["latest"] == result["second"]
    assert result["text"] == "hello"
    listed = {d["id"]: d for d in result["listed"]}
    assert set(listed) == {result["first"], result["second"]}
    assert {d["project"] for d in listed.values()} == {"q/data"}
    assert listed[result["first"]]["version"] == "1.0.0"
    assert listed[result["second"]]["version"] == "1.0.1"
    assert set(result["everywhere"]) >= set(listed)
    assert "runtime.progress" in result["refused"] and "$gt" in result["refused"]
    first = api_call(server, "tasks.get_by_id", {"task": result["first"]})["task"]
    assert first["status"] == "completed"
