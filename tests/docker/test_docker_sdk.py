"""A task made and enqueued by the real clearml SDK with docker=<local image> runs in it."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.docker.conftest import BASE_IMAGE, task_containers
from tests.helpers import api_call, result_of, run_sdk, sdk_env
from tests.integration.daemon.support import console_text, wait_final, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCRIPT = textwrap.dedent(
    """
    import argparse, os, time
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    print("in a container:", os.path.exists("/.dockerenv"), flush=True)
    print(f"lr is {args.lr}", flush=True)
    time.sleep(600 if os.environ.get("HANG") == "1" else 0)
    """
)

SUBMIT = """
import json
from clearml import Task
task = Task.create(
    project_name="docker", task_name="{name}", script="{script}", docker="{image}",
    argparse_args=[("lr", "0.01")], add_task_init_call=False, packages=False,
)
task.set_parameters({{"Args/lr": "0.5", "Environment/HANG": "{hang}"}})
Task.enqueue(task, queue_name="dq")
print("RESULT " + json.dumps({{"task": task.id}}))
"""


def submit(server: EmbeddedServer, script: Path, name: str, hang: str) -> str:
    code = SUBMIT.format(name=name, script=script, image=BASE_IMAGE, hang=hang)
    task_id: str = result_of(run_sdk(code, sdk_env(server)))["task"]
    return task_id


def test_sdk_task_runs_in_its_image_with_its_edited_parameter(
    embedded_server: EmbeddedServer, docker_agent_factory: Any, docker_client: Any, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    docker_agent_factory(embedded_server)
    task_id = submit(embedded_server, script, "sdk-docker", hang="0")
    doc = wait_final(embedded_server, task_id, timeout=240)
    text = console_text(embedded_server, task_id)
    assert doc["status"] == "completed", (doc.get("status_reason"), text)
    assert doc["container"]["image"] == BASE_IMAGE
    assert "in a container: True" in text
    assert "lr is 0.5" in text

    # the same, hanging: an abort ends it within grace (2 s in these agents) + 1 s
    hanging = submit(embedded_server, script, "sdk-docker-abort", hang="1")
    wait_for(lambda: "lr is 0.5" in console_text(embedded_server, hanging), 240, "the task")
    asked = time.monotonic()
    api_call(embedded_server, "tasks.stop", {"task": hanging})
    wait_for(lambda: not task_containers(docker_client, hanging) or all(
        c.status != "running" for c in task_containers(docker_client, hanging)
    ), 30, "the container to stop", every=0.05)  # fmt: skip
    stopped_after = time.monotonic() - asked
    assert wait_final(embedded_server, hanging, timeout=60)["status"] == "stopped"
    # abort watch poll (0.2 s) + grace (2 s) + 1 s
    assert stopped_after <= 0.2 + 2 + 1, stopped_after
