"""`conveyor build --id T --docker IMAGE --target NAME`: an image with the task's environment
ready, which `docker run` turns into the task; the API secret is never in the image."""

from __future__ import annotations

import contextlib
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from agent.server.embedded import EmbeddedServer
from tests.docker.conftest import BASE_IMAGE, docker_agent_env, task_containers
from tests.helpers import api_call
from tests.integration.daemon.support import CONVEYOR, agent_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import six
    print("task", os.environ["CLEARML_TASK_ID"], "six", six.__version__)
    print("secret given:", os.environ.get("CLEARML_API_SECRET_KEY") == "from-run")
    print("argv", sys.argv[1:])
    """
)


def test_build_docker_makes_an_image_that_runs_the_task(
    embedded_server: EmbeddedServer, docker_client: Any, tmp_path: Path, docker_cache: Path
) -> None:
    script = {"diff": SCRIPT, "entry_point": "main.py", "requirements": {"pip": "six==1.16.0"}}
    task_id = api_call(
        embedded_server, "tasks.create",
        {"name": "to image", "type": "training", "script": script,
         "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.5"}}}},
    )["id"]  # fmt: skip
    env = {**agent_env(embedded_server, tmp_path / "b", docker_cache, "b"), **docker_agent_env()}
    del env["CONVEYOR_DOCKER"], env["CONVEYOR_DOCKER_IMAGE"]
    name = f"conveyor-built-{task_id[:12]}"
    done = subprocess.run(
        [str(CONVEYOR), "build", "--id", task_id, "--docker", BASE_IMAGE, "--target", name,
         "--entry-point", "reuse_task"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        image = docker_client.images.get(f"{name}:latest")
        config = image.attrs["Config"]
        assert not any("CLEARML_API_SECRET_KEY" in item for item in config["Env"])
        assert env["CONVEYOR_SECRET_KEY"] not in str(image.attrs)
        assert not task_containers(docker_client, task_id)  # the build's container is gone
        out = docker_client.containers.run(
            name, remove=True, network_mode="none",
            environment={"CLEARML_API_SECRET_KEY": "from-run"},
        ).decode()  # fmt: skip
        assert f"task {task_id} six 1.16.0" in out
        assert "secret given: True" in out
        assert "argv ['--lr', '0.5']" in out or "argv ['--lr=0.5']" in out, out
        # Without an entry point the environment is there for any command.
        other = docker_client.containers.run(
            name, ["python", "-c", "import six; print(six.__version__)"], remove=True,
            network_mode="none",
        ).decode()  # fmt: skip
        assert other.strip() == "1.16.0"
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(f"{name}:latest", force=True)


def test_build_docker_refuses_an_entry_point_without_docker(
    embedded_server: EmbeddedServer, tmp_path: Path, docker_cache: Path
) -> None:
    env = agent_env(embedded_server, tmp_path / "b", docker_cache, "b")
    done = subprocess.run(
        [str(CONVEYOR), "build", "--id", "x" * 32, "--target", str(tmp_path / "t"),
         "--entry-point", "reuse_task"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--entry-point needs --docker" in done.stderr
