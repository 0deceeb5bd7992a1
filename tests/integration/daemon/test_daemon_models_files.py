"""An input model whose weights the real SDK uploaded to the embedded files host, swapped into a
cloned task with ``set_input_model``, fetched by a real `conveyor daemon` and read by the task."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, result_of, run_sdk, sdk_env
from tests.integration.daemon.support import console_text, wait_final

pytestmark = pytest.mark.slow

# Another process trains and uploads: output_uri=True sends the weights to the files host.
UPLOAD = """
import json, pathlib
from clearml import OutputModel, Task
task = Task.init(project_name="files-e2e", task_name="trainer", output_uri=True)
pathlib.Path("w.bin").write_text("trained on the files host\\n")
model = OutputModel(task=task, name="trained")
model.update_weights(weights_filename="w.bin")
print("RESULT " + json.dumps({"model": model.id, "url": model.url}))
task.close()
"""

# A user clones the template and swaps its input model for the uploaded one.
CLONE = """
import json
from clearml import Task
clone = Task.clone(source_task="{template}", name="uses the trained model")
clone.set_input_model(model_id="{model}", name="weights")
Task.enqueue(clone, queue_name="files")
print("RESULT " + json.dumps({{"task": clone.id}}))
"""

READ = textwrap.dedent(
    """
    import os
    with open(os.environ["CONVEYOR_INPUT_MODEL_WEIGHTS"]) as fh:
        print("weights say " + fh.read().strip())
    """
)


def test_a_model_uploaded_to_the_files_host_is_fetched_and_loaded(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_factory: Any
) -> None:
    env = sdk_env(embedded_server)
    uploaded = result_of(run_sdk(UPLOAD, env))
    assert uploaded["url"].startswith(embedded_server.files_host + "/"), uploaded

    placeholder = tmp_path / "placeholder.bin"
    placeholder.write_text("the template's model\n")
    first = api_call(
        embedded_server, "models.create", {"name": "placeholder", "uri": placeholder.as_uri()}
    )["id"]
    template = api_call(
        embedded_server,
        "tasks.create",
        {
            "name": "template",
            "type": "training",
            "script": {"diff": READ, "entry_point": "read.py"},
            "models": {"input": [{"name": "weights", "model": first}]},
        },
    )["id"]
    agent_factory(queue="files", env={"CLEARML_FILES_HOST": embedded_server.files_host})
    clone = result_of(run_sdk(CLONE.format(template=template, model=uploaded["model"]), env))

    doc = wait_final(embedded_server, clone["task"], timeout=120)
    text = console_text(embedded_server, clone["task"])
    assert doc["status"] == "completed", (doc.get("status_reason"), text)
    assert "weights say trained on the files host" in text
    assert f"fetched {embedded_server.files_host}/" in text
