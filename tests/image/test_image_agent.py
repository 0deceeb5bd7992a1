"""The agent's container image end to end: built from the repository's Dockerfile on the offline
base, run as docs/operations.md says (host network, the docker socket mounted, the data and cache
dirs at the same path), it serves a queue of the real embedded server (in this test process),
runs tasks in its own venvs and, in docker mode, in sibling containers through the socket; a
`docker stop` drains it, it unregisters and exits 0."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.docker.conftest import BASE_IMAGE, HOST_CA_BUNDLE, task_containers
from tests.image.conftest import IMAGE_UID, AgentContainer
from tests.integration.daemon.support import console_text, create_task, wait_final, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IN_AGENT = textwrap.dedent(
    """
    import os, sys
    print("hello from the agent image")
    print("uid:", os.getuid())
    print("python:", sys.version_info[:2], sys.base_prefix)
    """
)

DRAINED = textwrap.dedent(
    """
    import time
    print("running when the agent was told to stop", flush=True)
    time.sleep(3)
    print("finished during the drain", flush=True)
    """
)

IN_SIBLING = textwrap.dedent(
    """
    import os
    pid1 = open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode()
    print("pid 1:", pid1)
    print("agent installed here:", os.path.exists("/opt/conveyor/bin/conveyor"))
    print("hello from a sibling container")
    """
)


def literal(text: str) -> dict[str, Any]:
    return {"diff": text, "entry_point": "main.py"}


def finished(agent: AgentContainer, task_id: str) -> str:
    """The task's console once it completed; fails with the agent's log otherwise."""
    doc = wait_final(agent.server, task_id, timeout=120)
    text = console_text(agent.server, task_id)
    assert doc["status"] == "completed", (doc.get("status_reason"), text, agent.logs()[-4000:])
    return text


def stopped_cleanly(agent: AgentContainer) -> None:
    assert agent.stop() == 0, agent.logs()[-4000:]
    assert not agent.registered(), "the stopped agent is still registered"
    assert "unregister failed" not in agent.logs()


def test_image_runs_tasks_in_venvs_and_drains_on_docker_stop(
    embedded_server: EmbeddedServer, agent_container_factory: Any, tmp_path: Path
) -> None:
    agent = agent_container_factory(
        embedded_server, tmp_path / "data", tmp_path / "cache", "image-q"
    )
    task_id = create_task(embedded_server, "in-the-image", literal(IN_AGENT), queue="image-q")
    text = finished(agent, task_id)
    assert "hello from the agent image" in text
    assert f"uid: {IMAGE_UID}" in text  # the image's user, not root
    assert "python: (3, 11) /usr" in text  # the base image's interpreter made the task's venv
    task_dir = tmp_path / "data" / "work" / task_id
    wait_for(lambda: not task_dir.exists(), 30, "the task dir's removal")

    # `docker stop` while a task runs: SIGTERM reaches the agent (through tini), which drains.
    running = create_task(embedded_server, "drained", literal(DRAINED), queue="image-q")
    wait_for(
        lambda: "told to stop" in console_text(embedded_server, running), 60, "the task to run"
    )
    stopped_cleanly(agent)
    text = finished(agent, running)
    assert "finished during the drain" in text


def test_image_runs_a_docker_mode_task_in_a_sibling_container(
    embedded_server: EmbeddedServer,
    agent_container_factory: Any,
    docker_client: Any,
    tmp_path: Path,
) -> None:
    env = {
        "CONVEYOR_DOCKER": "1",
        "CONVEYOR_DOCKER_IMAGE": BASE_IMAGE,
        "CONVEYOR_DOCKER_PULL": "never",
        "CONVEYOR_DOCKER_NETWORK": "host",
    }
    if Path(HOST_CA_BUNDLE).is_file():  # the same path in the agent's image and on this host
        env["CONVEYOR_EXTRA_CA_BUNDLE"] = HOST_CA_BUNDLE
    # As root, as docs/docker.md advises for docker mode: the task container's files in the task
    # dir belong to the image's user (root), and the agent removes task dirs.
    agent = agent_container_factory(
        embedded_server, tmp_path / "data", tmp_path / "cache", "image-dq", user="0", env=env
    )
    task_id = create_task(embedded_server, "sibling", literal(IN_SIBLING), queue="image-dq")
    text = finished(agent, task_id)
    assert "hello from a sibling container" in text
    assert f"from {BASE_IMAGE}" in text
    assert "agent installed here: False" in text  # not in the agent's container
    assert "pid 1: /sbin/docker-init" in text  # the sibling's init, not the image's tini
    wait_for(lambda: not task_containers(docker_client, task_id), 30, "the sibling's removal")
    # The sibling wrote the task's venv as root; the agent (root too) removed the task dir.
    task_dir = tmp_path / "data" / "work" / task_id
    wait_for(lambda: not task_dir.exists(), 30, "the task dir's removal")
    stopped_cleanly(agent)
