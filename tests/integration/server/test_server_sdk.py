"""The real clearml SDK (in subprocesses) against the embedded server.

Each SDK start costs seconds, so each script checks several things and prints one RESULT.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, result_of, run_sdk, sdk_env

pytestmark = pytest.mark.slow

TRAIN = """
from clearml import Task
import json
task = Task.init(project_name="sdk/train", task_name="train-local")
logger = task.get_logger()
for i in range(5):
    logger.report_scalar("loss", "train", value=1.0 / (i + 1), iteration=i)
params = task.connect({"lr": 0.25, "layers": 3})
task.upload_artifact("stats", artifact_object={"accuracy": 0.5}, wait_on_upload=True)
for n in range(3):
    print(f"console line {n}")
print("RESULT " + json.dumps({"id": task.id, "lr": params["lr"]}))
"""

CLIENT = """
import json
from clearml import Task
src = Task.get_task(task_id="{task_id}")
out = {{
    "status": src.get_status(),
    "console": src.get_reported_console_output(number_of_reports=50),
    "scalars": src.get_reported_scalars(),
    "last": src.get_last_scalar_metrics(),
    "params": src.get_parameters(),
}}
created = Task.create(
    project_name="sdk/train", task_name="created-from-repo",
    repo="https://example.com/org/repo.git", branch="main", script="train.py",
    packages=["numpy==1.26.4"], docker="python:3.11",
    argparse_args=[("lr", "0.1"), ("epochs", "3")],
)
out["created_params"] = created.get_parameters()
created.set_parameters({{"Args/lr": "0.5", "Args/epochs": "4", "General/foo": 7}})
out["edited_params"] = Task.get_task(task_id=created.id).get_parameters()
Task.enqueue(created, queue_name="sdk-queue")
out["created"] = created.id
out["created_status"] = Task.get_task(task_id=created.id).get_status()
out["names"] = sorted(t.name for t in Task.get_tasks(project_name="sdk/train"))
print("RESULT " + json.dumps(out))
"""

REMOTE = """
import json
from clearml import Task, InputModel, OutputModel
task = Task.init(project_name="sdk/remote", task_name="remote-{mode}", output_uri="{out_uri}")
model = InputModel.import_model(weights_url="{weights_uri}", name="base-{mode}")
task.connect(model)
out_model = OutputModel(task=task, name="trained-{mode}")
out_model.update_weights(weights_filename="{weights}", auto_delete_file=False)
print("RESULT " + json.dumps({{"id": task.id, "input": model.id, "output": out_model.id}}))
print("before remote", flush=True)
task.execute_remotely(queue_name="remote-q", clone={clone}, exit_process={exit_process})
print("still running locally")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path_factory.mktemp("sdk") / "server.db") as srv:
        api_call(srv, "queues.create", {"name": "sdk-queue"})
        api_call(srv, "queues.create", {"name": "remote-q"})
        yield srv


def _task(server: EmbeddedServer, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = api_call(server, "tasks.get_by_id", {"task": task_id})["task"]
    return task


def _queue_tasks(server: EmbeddedServer, name: str) -> list[str]:
    queues = api_call(server, "queues.get_all", {"name": f"^{name}$"})["queues"]
    return [e["task"] for e in queues[0]["entries"]]


def test_task_init_script_then_sdk_client(server: EmbeddedServer) -> None:
    train = result_of(run_sdk(TRAIN, sdk_env(server)))
    task = _task(server, train["id"])
    assert task["status"] == "completed"
    assert task["last_iteration"] == 4
    for field in ("script", "execution", "output", "runtime", "container", "hyperparams"):
        assert isinstance(task[field], dict), field
    assert task["script"]["entry_point"] == "sdk_script.py"
    assert task["hyperparams"]["General"]["lr"]["value"] == "0.25"
    [artifact] = [a for a in task["execution"]["artifacts"] if a["key"] == "stats"]
    assert artifact["uri"].startswith(server.files_host + "/sdk/train/")
    stored = server.state.config.files_dir / artifact["uri"].removeprefix(server.files_host + "/")
    assert stored.is_file()

    client = result_of(run_sdk(CLIENT.format(task_id=train["id"]), sdk_env(server)))
    assert client["status"] == "completed"
    console = "\n".join(client["console"])
    assert all(f"console line {n}" in console for n in range(3))
    assert client["scalars"]["loss"]["train"]["x"] == [0, 1, 2, 3, 4]
    assert client["scalars"]["loss"]["train"]["y"][-1] == pytest.approx(0.2)
    assert client["last"]["loss"]["train"]["min"] == pytest.approx(0.2)
    assert client["params"]["General/layers"] == "3"

    assert client["created_params"] == {"Args/lr": "0.1", "Args/epochs": "3"}
    assert client["edited_params"]["Args/lr"] == "0.5"
    assert client["edited_params"]["General/foo"] == "7"
    assert client["created_status"] == "queued"
    assert client["names"] == ["created-from-repo", "train-local"]
    created = _task(server, client["created"])
    assert created["script"]["repository"] == "https://example.com/org/repo.git"
    assert created["script"]["entry_point"] == "train.py"
    assert "numpy==1.26.4" in created["script"]["requirements"]["pip"]
    assert created["container"]["image"] == "python:3.11"
    assert _queue_tasks(server, "sdk-queue") == [client["created"]]


def _remote(server: EmbeddedServer, tmp_path: Path, clone: bool) -> dict[str, Any]:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00weights")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    mode = "clone" if clone else "self"
    code = REMOTE.format(
        mode=mode,
        out_uri=out_dir.as_uri(),
        weights_uri=weights.as_uri(),
        weights=weights,
        clone=clone,
        exit_process=not clone,
    )
    proc = run_sdk(code, sdk_env(server))
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = result_of(proc)
    result["stdout"] = proc.stdout
    result["out_dir"] = out_dir
    return result


def test_execute_remotely_enqueues_itself_with_models(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    result = _remote(server, tmp_path, clone=False)
    assert "still running locally" not in result["stdout"]
    task = _task(server, result["id"])
    assert task["status"] == "queued"
    assert result["id"] in _queue_tasks(server, "remote-q")
    assert [m["model"] for m in task["models"]["input"]] == [result["input"]]
    assert [m["model"] for m in task["models"]["output"]] == [result["output"]]
    model = api_call(server, "models.get_by_id", {"model": result["output"]})["model"]
    assert model["uri"].startswith(result["out_dir"].as_uri())
    assert Path(model["uri"].removeprefix("file://")).read_bytes() == b"\x00weights"


def test_execute_remotely_clone_enqueues_a_copy(server: EmbeddedServer, tmp_path: Path) -> None:
    result = _remote(server, tmp_path, clone=True)
    assert "still running locally" in result["stdout"]
    original = _task(server, result["id"])
    assert original["status"] == "completed"
    clones = api_call(server, "tasks.get_all", {"parent": [result["id"]]})["tasks"]
    assert len(clones) == 1
    clone = clones[0]
    assert clone["status"] == "queued"
    assert clone["name"] == original["name"]
    assert clone["id"] in _queue_tasks(server, "remote-q")
    assert [m["model"] for m in clone["models"]["input"]] == [result["input"]]
    assert clone["models"]["output"] == []
