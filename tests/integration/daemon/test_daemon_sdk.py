"""Tasks made by the real clearml SDK, run by a real `conveyor daemon`.

The task's own venv installs clearml 2.1.12 (from uv's cache after the first test), so its script
attaches to its task in remote mode: the SDK applies the edited Args and resolves the swapped
input model, and the agent captures the console.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, result_of, run_sdk, sdk_env
from tests.integration.daemon.support import Repo, console_text, wait_final

pytestmark = pytest.mark.slow

TRAIN = textwrap.dedent(
    """
    import argparse
    from clearml import InputModel, Task

    task = Task.init(project_name="e2e", task_name="train")
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    print(f"lr is {args.lr}")
    config = task.connect({"batch": 8, "tag": "local"}, name="Train")
    print(f"batch is {config['batch']} tag is {config['tag']}")
    model = InputModel(model_id=task.get_parameter("General/model_id"))
    task.connect(model, name="base")
    with open(model.get_weights()) as fh:
        print(f"weights say {fh.read().strip()}")
    """
)

SUBMIT = """
import json
from clearml import InputModel, Task
first = InputModel.import_model(weights_url="{w1}", name="first", project="e2e")
second = InputModel.import_model(weights_url="{w2}", name="second", project="e2e")
task = Task.create(
    project_name="e2e", task_name="sdk-made", repo="{repo}", commit="{commit}",
    script="train.py", packages=["clearml==2.1.12"], argparse_args=[("lr", "0.01")],
)
task.set_parameters({{"Args/lr": "0.7", "General/model_id": first.id, "Train/batch": "64"}})
print("RESULT " + json.dumps({{"task": task.id, "first": first.id, "second": second.id}}))
"""

READ_BACK = """
import json
from clearml import Task
task = Task.get_task(task_id="{task}")
print("RESULT " + json.dumps({{"console": task.get_reported_console_output(100)}}))
"""


def test_sdk_task_sees_edited_args_and_swapped_model(
    embedded_server: EmbeddedServer, repo: Repo, tmp_path: Path, agent_factory: Any
) -> None:
    commit = repo.commit({"train.py": TRAIN})
    w1, w2 = tmp_path / "w1.txt", tmp_path / "w2.txt"
    w1.write_text("first\n")
    w2.write_text("second\n")
    env = sdk_env(embedded_server)
    made = result_of(
        run_sdk(SUBMIT.format(w1=w1.as_uri(), w2=w2.as_uri(), repo=repo.url, commit=commit), env)
    )
    task_id = made["task"]
    # The user swaps the input model in the UI: the task's "base" input becomes `second`.
    api_call(
        embedded_server,
        "tasks.add_or_update_model",
        {"task": task_id, "name": "base", "model": made["second"], "type": "input"},
    )
    agent_factory(queue="sdk")
    enqueue = f"from clearml import Task\nTask.enqueue('{task_id}', queue_name='sdk')\n"
    assert run_sdk(enqueue, env).returncode == 0
    doc = wait_final(embedded_server, task_id, timeout=300)
    text = console_text(embedded_server, task_id)
    assert doc["status"] == "completed", (doc.get("status_reason"), text)
    assert "lr is 0.7" in text
    assert "batch is 64 tag is local" in text  # a connect(dict) edit, applied once by the SDK
    assert "weights say second" in text
    console = result_of(run_sdk(READ_BACK.format(task=task_id), env))["console"]
    assert any("lr is 0.7" in chunk for chunk in console)
