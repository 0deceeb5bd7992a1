"""Models: OutputModel.update_weights to the files host, InputModel(id).get_local_copy,
Model.query_models, and Task.connect(InputModel) swapped by a user and honoured remotely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import api_call
from tests.sdk.support import Plane, console_text, run, wait_status

pytestmark = pytest.mark.slow

PUBLISH = """
from pathlib import Path
from clearml import OutputModel, Task
task = Task.init(project_name="sdk/models", task_name="train", output_uri=True)
Path("w.bin").write_text("weights v1")
model = OutputModel(task=task, name="tiny", framework="custom")
model.update_weights(weights_filename="w.bin", auto_delete_file=False)
task.close()
emit({"model": model.id, "url": model.url})
"""

READ = """
from pathlib import Path
from clearml import InputModel, Model
local = InputModel(model_id="{model}").get_local_copy()
found = Model.query_models(project_name="sdk/models", model_name="tiny")
emit({{"text": Path(local).read_text(), "found": [m.id for m in found]}})
"""

IMPORT = """
from clearml import InputModel
ids = [InputModel.import_model(weights_url=url, name=name, project="sdk/models").id
       for name, url in (("first", "{w1}"), ("second", "{w2}"))]
emit(ids)
"""

# Recorded locally with the first model, not enqueued: a user swaps the model, then enqueues.
USES = """
from pathlib import Path
from clearml import InputModel, Task
task = Task.init(project_name="sdk/models", task_name="uses a model")
model = InputModel(model_id="{model}")
task.connect(model, name="base")
emit(task.id)
task.execute_remotely(queue_name=None, exit_process=True)
print("weights say", Path(model.get_local_copy()).read_text().strip())
"""


@pytest.fixture(scope="module")
def published(plane: Plane) -> dict[str, str]:
    out: dict[str, str] = run(plane, PUBLISH)
    return out


def test_output_model_uploaded_read_back_and_queried(
    plane: Plane, published: dict[str, str]
) -> None:
    assert published["url"].startswith(plane.server.files_host)
    out: dict[str, Any] = run(plane, READ.format(model=published["model"]))
    assert out["text"] == "weights v1"
    assert published["model"] in out["found"]


def swap_and_run(plane: Plane, first: str, second: str) -> tuple[dict[str, Any], str]:
    task_id = run(plane, USES.format(model=first))
    api_call(
        plane.server,
        "tasks.add_or_update_model",
        {"task": task_id, "name": "base", "model": second, "type": "input"},
    )
    run(plane, f"from clearml import Task\nTask.enqueue('{task_id}', queue_name='default')\n"
        "emit(1)")  # fmt: skip
    doc = wait_status(plane, task_id)
    return doc, console_text(plane.server, task_id)


def test_connected_input_model_swapped_by_a_user(plane: Plane, tmp_path: Path) -> None:
    (tmp_path / "w1").write_text("first\n")
    (tmp_path / "w2").write_text("second\n")
    first, second = run(
        plane, IMPORT.format(w1=(tmp_path / "w1").as_uri(), w2=(tmp_path / "w2").as_uri())
    )
    doc, text = swap_and_run(plane, first, second)
    assert doc["status"] == "completed", (doc["status_reason"], text)
    assert "weights say second" in text


def test_swapped_input_model_on_the_files_host(
    plane: Plane, published: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "w0").write_text("zero\n")
    url = (tmp_path / "w0").as_uri()
    first, _ = run(plane, IMPORT.format(w1=url, w2=url))
    doc, text = swap_and_run(plane, first, published["model"])
    assert doc["status"] == "completed", (doc["status_reason"], text)
    assert "weights say weights v1" in text
