"""``execute_remotely`` onto a real ``conveyor daemon``, with the file service as the files host:
the remote run downloads what the local run uploaded and uploads an artifact and a model that a
third process then downloads. The task's venv installs clearml (from uv's cache after the first
SDK task of the session)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, result_of, run_sdk, sdk_env
from tests.integration.daemon.support import console_text, start_agent, wait_final

pytestmark = pytest.mark.slow

QUEUE = "files-remote"

SUBMIT = """
import json
from clearml import StorageManager, Task
task = Task.init(project_name="files e2e", task_name="remote", output_uri=True)
source = "{files_host}/inputs/source.bin"
if Task.running_locally():
    StorageManager.upload_file("{source}", source, wait_for_upload=True)
    print("RESULT " + json.dumps({{"id": task.id}}), flush=True)
task.execute_remotely(queue_name="{queue}")
# --- on the agent from here on
from pathlib import Path
from clearml import OutputModel
data = Path(StorageManager.get_local_copy(source)).read_bytes()
out = Path("reversed.bin")
out.write_bytes(data[::-1])
task.upload_artifact("reversed", artifact_object=str(out), wait_on_upload=True)
model = OutputModel(task=task, name="remote-model")
model.update_weights(weights_filename=str(out), auto_delete_file=False)
task.flush(wait_for_uploads=True)
print(f"remote read {{len(data)}} bytes")
"""

CHECK = """
import hashlib, json
from pathlib import Path
from clearml import InputModel, Task
task = Task.get_task(task_id="{task_id}")
artifact = Path(task.artifacts["reversed"].get_local_copy()).read_bytes()
weights = Path(InputModel(model_id="{model_id}").get_weights()).read_bytes()
print("RESULT " + json.dumps({{
    "artifact": hashlib.sha256(artifact).hexdigest(),
    "weights": hashlib.sha256(weights).hexdigest(),
}}))
"""


def test_remote_run_reads_and_writes_through_the_file_service(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    server = embedded_server
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(150_000))
    expected = hashlib.sha256(source.read_bytes()[::-1]).hexdigest()
    agent = start_agent(
        server,
        tmp_path / "agent",
        tmp_path / "agent-cache",
        QUEUE,
        env={"CONVEYOR_FILES_HOST": server.files_host},
    )
    try:
        env = sdk_env(server)
        code = SUBMIT.format(files_host=server.files_host, source=source, queue=QUEUE)
        submitted = run_sdk(code, env)
        task_id = result_of(submitted)["id"]

        doc = wait_final(server, task_id, timeout=300)
        text = console_text(server, task_id)
        assert doc["status"] == "completed", (doc.get("status_reason"), text, agent.log())
        assert "remote read 150000 bytes" in text

        task: dict[str, Any] = api_call(server, "tasks.get_by_id", {"task": task_id})["task"]
        [artifact] = [a for a in task["execution"]["artifacts"] if a["key"] == "reversed"]
        assert artifact["uri"].startswith(server.files_host + "/files%20e2e/")
        [model] = task["models"]["output"]
        check = run_sdk(CHECK.format(task_id=task_id, model_id=model["model"]), env)
        assert result_of(check) == {"artifact": expected, "weights": expected}
    finally:
        agent.stop()
