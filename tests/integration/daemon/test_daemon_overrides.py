"""Parameters edited after a task was created reach a script that does not use the SDK."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import console_text, create_task, wait_final

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import argparse, os
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("data")
    args = parser.parse_args()
    print(f"lr={args.lr} batch={args.batch} amp={args.amp} data={args.data}")
    print("MY_VAR", os.environ.get("MY_VAR"))
    with open(os.environ["CONVEYOR_CONFIG_TRAIN"]) as fh:
        print("config says", fh.read().strip())
    """
)


def test_args_environment_and_configuration_reach_an_sdk_free_script(
    embedded_server: EmbeddedServer, agent_factory: Any
) -> None:
    agent_factory()
    hyperparams = {
        "Args": {
            "lr": {"section": "Args", "name": "lr", "value": "0.7", "type": "float"},
            "batch": {"section": "Args", "name": "batch", "value": "64", "type": "int"},
            "amp": {"section": "Args", "name": "amp", "value": "True", "type": "bool"},
        },
        "Environment": {"MY_VAR": {"section": "Environment", "name": "MY_VAR", "value": "hi"}},
    }
    configuration = {"train": {"name": "train", "type": "yaml", "value": "epochs: 12\n"}}
    task_id = create_task(
        embedded_server,
        "overrides",
        {"diff": SCRIPT, "entry_point": "train.py --lr 0.01 ./data"},
        hyperparams=hyperparams,
        configuration=configuration,
    )
    doc = wait_final(embedded_server, task_id)
    text = console_text(embedded_server, task_id)
    assert doc["status"] == "completed", (doc.get("status_reason"), text)
    assert "lr=0.7 batch=64 amp=True data=./data" in text
    assert "MY_VAR hi" in text
    assert "config says epochs: 12" in text
    assert "overrides: lr=0.7 (was 0.01)" in text


MODEL_SCRIPT = textwrap.dedent(
    """
    import os
    print("base has", open(os.environ["CONVEYOR_INPUT_MODEL_BASE"]).read().strip())
    first, base = os.environ["CONVEYOR_INPUT_MODEL"], os.environ["CONVEYOR_INPUT_MODEL_BASE"]
    print("first is base", first == base)
    """
)


def test_swapped_input_model_is_the_file_the_script_gets(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_factory: Any
) -> None:
    weights = {}
    for name in ("first", "second"):
        path = tmp_path / f"{name}.bin"
        path.write_text(f"{name} weights\n")
        weights[name] = api_call(
            embedded_server, "models.create", {"name": name, "uri": path.as_uri()}
        )["id"]
    agent_factory()
    task_id = create_task(
        embedded_server,
        "model",
        {"diff": MODEL_SCRIPT, "entry_point": "m.py"},
        models={"input": [{"name": "base", "model": weights["first"]}]},
    )
    # swapped in the UI before the agent got to it: the run must use `second`
    api_call(
        embedded_server,
        "tasks.add_or_update_model",
        {"task": task_id, "name": "base", "model": weights["second"], "type": "input"},
    )
    doc = wait_final(embedded_server, task_id)
    text = console_text(embedded_server, task_id)
    assert doc["status"] == "completed", (doc.get("status_reason"), text)
    assert "base has second weights" in text
    assert "first is base True" in text
