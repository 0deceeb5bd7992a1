"""Debug images and single values reported by the real clearml SDK, read back by another process.

The image is uploaded to the embedded files host by the SDK, its event stored; a second SDK
process finds it with ``Task.get_debug_samples`` (``events.debug_images``), downloads it from
the URL it names, and reads the single values (``events.get_task_single_value_metrics``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, result_of, run_sdk, sdk_env

pytestmark = pytest.mark.slow

# A 1x1 PNG: the SDK uploads a local image file as it is.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

REPORT = """
import json
from clearml import Task
task = Task.init(project_name="sdk/events", task_name="images")
logger = task.get_logger()
for i in range(3):
    logger.report_image("samples", "input", iteration=i, local_path={png!r})
logger.report_image("other", "mask", iteration=7, local_path={png!r})
logger.report_single_value("accuracy", 0.93)
logger.report_single_value("epochs", 12)
logger.report_scalar("loss", "train", value=0.5, iteration=1)
task.flush(wait_for_uploads=True)
print("RESULT " + json.dumps({{"id": task.id}}))
task.close()
"""

READ = """
import json
from clearml import StorageManager, Task
task = Task.get_task(task_id={task_id!r})
samples = task.get_debug_samples("samples", "input")
last_two = task.get_debug_samples("samples", "input", n_last_iterations=2)
copy = StorageManager.get_local_copy(samples[0]["url"])
print("RESULT " + json.dumps({{
    "samples": samples,
    "last_two": [s["iter"] for s in last_two],
    "other": task.get_debug_samples("other", "mask"),
    "bytes": open(copy, "rb").read().hex(),
    "single": task.get_reported_single_values(),
}}))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path_factory.mktemp("sdk-events") / "server.db") as running:
        yield running


def test_debug_samples_and_single_values_read_back(server: EmbeddedServer, tmp_path: Path) -> None:
    image = tmp_path / "pixel.png"
    image.write_bytes(PNG)
    env = sdk_env(server)
    task_id = result_of(run_sdk(REPORT.format(png=str(image)), env))["id"]
    got = result_of(run_sdk(READ.format(task_id=task_id), env))
    samples = got["samples"]
    assert sorted(s["iter"] for s in samples) == [0, 1, 2], samples
    assert all(s["url"].startswith(server.files_host) for s in samples), samples
    assert {s["metric"] for s in samples} == {"samples"}
    assert {s["variant"] for s in samples} == {"input"}
    assert sorted(got["last_two"]) == [1, 2]
    assert [s["iter"] for s in got["other"]] == [7]
    assert bytes.fromhex(got["bytes"]) == PNG
    assert got["single"] == {"accuracy": 0.93, "epochs": 12}
    metrics = api_call(server, "events.get_task_metrics", {"tasks": [task_id]})["metrics"]
    assert metrics == [{"task": task_id, "metrics": ["Summary", "loss", "other", "samples"]}]
    images = api_call(
        server,
        "events.get_task_metrics",
        {"tasks": [task_id], "event_type": "training_debug_image"},
    )["metrics"]
    assert images == [{"task": task_id, "metrics": ["other", "samples"]}]
