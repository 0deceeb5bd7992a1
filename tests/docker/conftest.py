"""Fixtures for tests on a real docker engine (pytest marker ``docker``).

The engine is the one at ``$DOCKER_HOST``, else the private one ``scripts/docker-engine`` starts.
Without a reachable engine (or without the base image ``scripts/base-image`` builds) these tests
are skipped with the reason, so ``scripts/check`` works on a machine without docker; with
``CONVEYOR_REQUIRE_DOCKER=1`` (``scripts/test`` sets it once its engine is up) they fail instead.
Images are never pulled: every agent here runs with ``docker_pull = never``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from agent.server.embedded import EmbeddedServer
from tests.integration.daemon.support import CONVEYOR, Agent, agent_env, start_agent, wait_for

BASE_IMAGE = "conveyor-test-base:latest"
PRIVATE_ENGINE = "unix:///var/lib/conveyor-docker/docker.sock"  # scripts/docker-engine's default
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
READY = '"agent ready"'  # the daemon's log event once it serves its queues


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or PRIVATE_ENGINE


def _unavailable(reason: str) -> None:
    if os.environ.get("CONVEYOR_REQUIRE_DOCKER") == "1":
        pytest.fail(f"CONVEYOR_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    host = docker_host()
    try:
        client = docker.DockerClient(base_url=host, timeout=120)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        _unavailable(
            f"no docker engine reachable at {host} ({exc}); start one with "
            "`scripts/docker-engine start` (scripts/test does)"
        )
        return
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"image {BASE_IMAGE} is missing: build it with `scripts/base-image`")
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One agent cache for the session (uv's cache, git mirrors): warm starts after the first."""
    return tmp_path_factory.mktemp("docker-agent-cache")


def docker_agent_env(**extra: str) -> dict[str, str]:
    env = {
        "CONVEYOR_DOCKER": "1",
        "CONVEYOR_DOCKER_IMAGE": BASE_IMAGE,
        "CONVEYOR_DOCKER_PULL": "never",
        "CONVEYOR_DOCKER_HOST": docker_host(),
        "CONVEYOR_DOCKER_NETWORK": "host",
    }
    if Path(HOST_CA_BUNDLE).is_file():  # HTTPS from containers may go through this CA
        env["CONVEYOR_EXTRA_CA_BUNDLE"] = HOST_CA_BUNDLE
    env.update(extra)
    return env


def task_containers(client: Any, task_id: str) -> list[Any]:
    found = client.containers.list(
        all=True, sparse=True, filters={"label": f"conveyor.task={task_id}"}
    )
    return list(found)


def stop_agent(agent: Agent) -> None:
    agent.stop()


def spawn_agent(
    server: EmbeddedServer, data_dir: Path, cache: Path, queue: str, *extra: str,
    env: dict[str, str],
) -> Agent:  # fmt: skip
    """`conveyor daemon` on an existing queue; returns once it says it is ready."""
    log_path = data_dir / "agent.log"
    before = log_path.read_text(errors="replace").count(READY) if log_path.exists() else 0
    full_env = {**agent_env(server, data_dir, cache, queue), **env}
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [str(CONVEYOR), "daemon", "--queue", queue, *extra],
            env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    agent = Agent(process, log_path, server, queue)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"agent exited early:\n{agent.log()}")
        return agent.log().count(READY) > before

    wait_for(ready, 60, "the agent to be ready")
    return agent


@pytest.fixture
def docker_agent_factory(
    docker_client: Any, tmp_path: Path, docker_cache: Path
) -> Iterator[Callable[..., Agent]]:
    """Start `conveyor daemon --docker` processes (base image, pulls disabled); ``restart``
    starts one again with the same data dir and worker id."""
    started: list[Agent] = []

    def make(
        server: EmbeddedServer, *extra: str, queue: str = "dq", restart: bool = False, **env: str
    ) -> Agent:  # fmt: skip
        data_dir = tmp_path / f"agent-{queue}"
        if restart:
            agent = spawn_agent(
                server, data_dir, docker_cache, queue, *extra, env=docker_agent_env(**env)
            )
        else:
            agent = start_agent(
                server, data_dir, docker_cache, queue, *extra, env=docker_agent_env(**env)
            )
        started.append(agent)
        return agent

    yield make
    for agent in started:
        stop_agent(agent)
