"""Fixtures for tests of the agent's container image (the repository's Dockerfile).

The image is built once per session on the docker engine the ``docker`` tests use, from the
offline base ``conveyor-test-base:latest`` (``scripts/base-image``), never pulling: the build's
RUN steps reach only the Debian mirror and PyPI (host network: the private engine has no bridge).
A build is skipped when the engine already holds an image of the same build context (its hash is
the image's ``conveyor.context`` label), so a warm run costs no build at all; otherwise the
engine's layer cache keeps the dependencies' layer as long as pyproject.toml is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
import pytest

from agent.server.embedded import EmbeddedServer
from tests.docker.conftest import BASE_IMAGE, docker_client, docker_host
from tests.helpers import REPO_ROOT, api_call
from tests.integration.daemon.support import wait_for

__all__ = ["docker_client"]  # the docker tests' session fixture: engine and base image, or skip

AGENT_IMAGE = "conveyor-agent:test"
CONTEXT_LABEL = "conveyor.context"
TEST_LABEL = "conveyor.image-test"  # on every container started here, to find leftovers
BUILD_TIMEOUT = 900  # seconds for one engine request while building (a cold build downloads)
IMAGE_UID = 10001  # the image's user (Dockerfile ARG CONVEYOR_UID)
SOCKET_IN_CONTAINER = "/var/run/docker.sock"
STOP_TIMEOUT = 60  # seconds `docker stop` waits after SIGTERM (the drain of an idle agent)


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    context_hash: str
    build_seconds: float  # 0.0: the engine already had it


def context_files(root: Path) -> list[str]:
    """The files the build context holds, as the docker SDK selects them (.dockerignore)."""
    patterns = [
        line.strip()
        for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    included = docker.utils.exclude_paths(str(root), patterns, dockerfile="Dockerfile")
    return sorted(p for p in included if (root / p).is_file())


def context_hash(root: Path, buildargs: dict[str, str]) -> str:
    digest = hashlib.sha256(repr(sorted(buildargs.items())).encode())
    for name in context_files(root):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_log(exc: docker.errors.BuildError) -> str:
    lines = [str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log]
    return "".join(lines)[-6000:]


def build_agent_image(client: Any, base_image: str) -> BuiltImage:
    """The Dockerfile on ``base_image`` as ``AGENT_IMAGE``, unless the engine has this context."""
    buildargs = {"BASE_IMAGE": base_image}
    wanted = context_hash(REPO_ROOT, buildargs)
    try:
        if client.images.get(AGENT_IMAGE).labels.get(CONTEXT_LABEL) == wanted:
            return BuiltImage(AGENT_IMAGE, wanted, 0.0)
    except docker.errors.ImageNotFound:
        pass
    started = time.monotonic()
    try:
        client.images.build(
            path=str(REPO_ROOT),
            tag=AGENT_IMAGE,
            buildargs=buildargs,
            labels={CONTEXT_LABEL: wanted},
            pull=False,  # the base is local; no registry is ever asked
            network_mode="host",  # RUN steps reach the Debian mirror and PyPI
            rm=True,
            forcerm=True,
            timeout=BUILD_TIMEOUT,
        )
    except docker.errors.BuildError as exc:
        pytest.fail(f"docker build of {REPO_ROOT / 'Dockerfile'} failed:\n{build_log(exc)}")
    seconds = time.monotonic() - started
    # The image this one replaced (and its own layers) only fills the engine's disk.
    client.images.prune(filters={"dangling": True, "label": CONTEXT_LABEL})
    return BuiltImage(AGENT_IMAGE, wanted, seconds)


@pytest.fixture(scope="session")
def agent_image(docker_client: Any) -> BuiltImage:
    """The agent's image, built from the repository's Dockerfile on the offline base."""
    builder = docker.DockerClient(base_url=docker_host(), timeout=BUILD_TIMEOUT)
    try:
        built = build_agent_image(builder, BASE_IMAGE)
    finally:
        builder.close()
    print(f"\n{AGENT_IMAGE} (context {built.context_hash}): built in {built.build_seconds:.1f} s")
    return built


def engine_socket() -> Path:
    """The engine's socket on this machine: the agent container gets it mounted."""
    host = docker_host()
    if not host.startswith("unix://"):
        reason = f"the engine at {host} is not a local socket that a container could mount"
        if os.environ.get("CONVEYOR_REQUIRE_DOCKER") == "1":
            pytest.fail(f"CONVEYOR_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    return Path(host.removeprefix("unix://"))


@dataclass
class AgentContainer:
    """A `conveyor daemon` in the agent image, serving ``queue`` on ``server``."""

    container: Any
    server: EmbeddedServer
    worker_id: str

    def logs(self) -> str:
        return bytes(self.container.logs()).decode(errors="replace")

    def registered(self) -> bool:
        workers = api_call(self.server, "workers.get_all", {}).get("workers", [])
        return any(w.get("id") == self.worker_id for w in workers)

    def wait_registered(self, timeout: float = 60) -> None:
        def ready() -> bool:
            self.container.reload()
            if self.container.status in ("exited", "dead"):
                raise AssertionError(f"the agent container exited early:\n{self.logs()}")
            return self.registered()

        wait_for(ready, timeout, f"{self.worker_id} (in its container) to register", every=0.2)

    def stop(self) -> int:
        """`docker stop` (SIGTERM to tini, forwarded to the agent); the container's exit code."""
        self.container.stop(timeout=STOP_TIMEOUT)
        code: int = self.container.wait(timeout=STOP_TIMEOUT + 30)["StatusCode"]
        return code


def same_path_dirs(*dirs: Path, owner: int | None) -> dict[str, dict[str, str]]:
    """Bind mounts at the same path on both sides (docs/operations.md), owned by ``owner``."""
    volumes: dict[str, dict[str, str]] = {}
    for path in dirs:
        path.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(path, owner, owner)
        volumes[str(path)] = {"bind": str(path), "mode": "rw"}
    return volumes


@pytest.fixture
def agent_container_factory(
    docker_client: Any, agent_image: BuiltImage
) -> Iterator[Any]:  # fmt: skip
    """Start agent containers as docs/operations.md says: host network, the docker socket with
    its group, the data and cache dirs at the same path. Removed (with their anonymous volumes)
    at the end of the test."""
    started: list[AgentContainer] = []
    socket = engine_socket()

    def make(
        server: EmbeddedServer, data_dir: Path, cache_dir: Path, queue: str, *args: str,
        user: str | None = None, env: dict[str, str] | None = None,
    ) -> AgentContainer:  # fmt: skip
        api_call(server, "queues.create", {"name": queue})
        worker_id = f"image-agent-{queue}-{uuid.uuid4().hex[:6]}"
        creds = server.credentials
        volumes = same_path_dirs(data_dir, cache_dir, owner=None if user else IMAGE_UID)
        volumes[str(socket)] = {"bind": SOCKET_IN_CONTAINER, "mode": "rw"}
        container = docker_client.containers.run(
            agent_image.tag,
            ["daemon", "--queue", queue, *args],
            detach=True,
            name=worker_id,
            labels={TEST_LABEL: "1"},
            network_mode="host",  # the embedded server listens on the test's 127.0.0.1
            user=user,
            group_add=[str(socket.stat().st_gid)],
            volumes=volumes,
            environment={
                "CONVEYOR_API_HOST": server.url,
                "CONVEYOR_ACCESS_KEY": creds.access_key,
                "CONVEYOR_SECRET_KEY": creds.secret_key,
                "CONVEYOR_DATA_DIR": str(data_dir),
                "CONVEYOR_CACHE_DIR": str(cache_dir),
                "CONVEYOR_WORKER_ID": worker_id,
                **(env or {}),
            },
        )
        agent = AgentContainer(container, server, worker_id)
        started.append(agent)
        agent.wait_registered()
        return agent

    yield make
    for agent in started:
        try:
            agent.container.remove(force=True, v=True)
        except docker.errors.NotFound:
            continue
