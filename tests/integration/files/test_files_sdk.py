"""The real clearml SDK against the embedded file service (``CLEARML_FILES_HOST=<url>/files``).

One process uploads artifacts (a dict, a file, a folder) and a model with the default output
destination; another process downloads them and reports digests. Each SDK start costs seconds,
so each script does several things and prints one RESULT.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, result_of, run_sdk, sdk_env

pytestmark = pytest.mark.slow

PRODUCE = """
import json, sys
from clearml import Task, OutputModel
task = Task.init(project_name="files sdk/with space", task_name="produce", output_uri=True)
task.upload_artifact("stats", artifact_object={{"accuracy": 0.5, "names": ["a", "b"]}},
                     wait_on_upload=True)
task.upload_artifact("blob", artifact_object="{blob}", wait_on_upload=True)
task.upload_artifact("tree", artifact_object="{tree}", wait_on_upload=True)
model = OutputModel(task=task, name="trained")
model.update_weights(weights_filename="{weights}", auto_delete_file=False)
task.flush(wait_for_uploads=True)
print("RESULT " + json.dumps({{"id": task.id, "model": model.id, "model_url": model.url}}))
"""

CONSUME = """
import hashlib, json, os
from pathlib import Path
from clearml import Task, InputModel

def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

def tree(root):
    return {{str(p.relative_to(root)): digest(p) for p in Path(root).rglob("*") if p.is_file()}}

task = Task.get_task(task_id="{task_id}")
arts = task.artifacts
stats = arts["stats"].get_local_copy()
out = {{
    "stats": json.loads(Path(stats).read_text()),
    "blob": digest(arts["blob"].get_local_copy()),
    "tree": tree(arts["tree"].get_local_copy()),
    "weights": digest(InputModel(model_id="{model_id}").get_weights()),
}}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path_factory.mktemp("files-sdk") / "server.db") as srv:
        yield srv


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _inputs(tmp_path: Path) -> dict[str, Any]:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(300_000))
    tree = tmp_path / "tree"
    (tree / "sub dir").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub dir" / "b.bin").write_bytes(os.urandom(70_000))
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"\x00weights" + os.urandom(200_000))
    return {
        "blob": blob,
        "tree": tree,
        "weights": weights,
        "tree_digests": {
            str(p.relative_to(tree)): _digest(p.read_bytes())
            for p in tree.rglob("*")
            if p.is_file()
        },
    }


def _stored(server: EmbeddedServer, uri: str) -> Path:
    assert uri.startswith(server.files_host + "/"), uri
    return server.state.config.files_dir / unquote(uri.removeprefix(server.files_host + "/"))


def test_artifacts_and_model_round_trip_through_the_file_service(
    server: EmbeddedServer, tmp_path: Path
) -> None:
    given = _inputs(tmp_path)
    code = PRODUCE.format(blob=given["blob"], tree=given["tree"], weights=given["weights"])
    produced = run_sdk(code, sdk_env(server))
    assert produced.returncode == 0, produced.stderr
    made = result_of(produced)

    task = api_call(server, "tasks.get_by_id", {"task": made["id"]})["task"]
    artifacts = {a["key"]: a for a in task["execution"]["artifacts"]}
    assert set(artifacts) >= {"stats", "blob", "tree"}
    for key in ("stats", "blob", "tree"):
        assert _stored(server, artifacts[key]["uri"]).is_file(), key
    assert _stored(server, artifacts["blob"]["uri"]).read_bytes() == given["blob"].read_bytes()
    model = api_call(server, "models.get_by_id", {"model": made["model"]})["model"]
    assert model["uri"] == made["model_url"]
    assert _stored(server, model["uri"]).read_bytes() == given["weights"].read_bytes()

    consumed = run_sdk(CONSUME.format(task_id=made["id"], model_id=made["model"]), sdk_env(server))
    got = result_of(consumed)
    assert got["stats"] == {"accuracy": 0.5, "names": ["a", "b"]}
    assert got["blob"] == _digest(given["blob"].read_bytes())
    assert got["tree"] == given["tree_digests"]
    assert got["weights"] == _digest(given["weights"].read_bytes())
