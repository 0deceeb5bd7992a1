"""One control plane and two real agents (`default`, `services`) for the SDK conformance suite."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, sdk_env
from tests.integration.daemon.support import CONVEYOR, Agent, agent_env, wait_for


@dataclass
class Plane:
    """What every SDK case needs: the server, the SDK's environment, the two agents."""

    server: EmbeddedServer
    env: dict[str, str]
    default: Agent
    services: Agent


def _start(server: EmbeddedServer, root: Path, cache: Path, queue: str, *flags: str) -> Agent:
    env = agent_env(server, root / queue, cache, queue)
    env["CONVEYOR_POLL_WAIT"] = "5"
    # The API host is "configured" here (not the agent's own embedded one): name the files
    # host, or tasks would get the SDK's guess (port 8081) and their uploads would fail.
    env["CONVEYOR_FILES_HOST"] = server.files_host
    log_path = root / f"{queue}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(CONVEYOR), "daemon", "--queue", queue, *flags],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    agent = Agent(process, log_path, server, queue)

    def registered() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"agent {queue} exited early:\n{agent.log()}")
        workers = api_call(server, "workers.get_all", {}).get("workers", [])
        return any(str(w.get("id", "")).startswith(f"test-agent-{queue}") for w in workers)

    wait_for(registered, 60, f"the {queue} agent to register")
    return agent


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """The embedded server, a `default` agent with two slots (HPO concurrency, parallel steps)
    and a `services` agent in services mode (pipeline and HPO controllers), for the session."""
    root = tmp_path_factory.mktemp("sdk-plane")
    cache = root / "cache"
    with EmbeddedServer(root / "server.db") as server:
        default = _start(server, root, cache, "default", "--slots", "2")
        try:
            services = _start(
                server, root, cache, "services", "--services-mode", "4", "--create-queue"
            )
        except BaseException:
            default.stop()
            raise
        try:
            yield Plane(server, sdk_env(server), default, services)
        finally:
            services.stop()
            default.stop()
