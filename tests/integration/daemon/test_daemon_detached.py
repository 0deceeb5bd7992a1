"""`conveyor daemon --detached` returns with the agent serving in the background; `--stop`
finds it by worker id and stops it; a second `--detached` of the same worker is refused."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import CONVEYOR, agent_env, wait_for


def conveyor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONVEYOR), *args], env=env, capture_output=True, text=True, timeout=90, check=False
    )


def workers(server: EmbeddedServer) -> list[str]:
    return [w["id"] for w in api_call(server, "workers.get_all", {})["workers"]]


def test_detached_then_stop(embedded_server: EmbeddedServer, tmp_path: Path) -> None:
    env = agent_env(embedded_server, tmp_path / "data", tmp_path / "cache", "bg")
    started = conveyor(env, "daemon", "--queue", "bg", "--create-queue", "--detached")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "running in the background" in started.stdout
    pid_file = tmp_path / "data" / "run" / "test-agent-bg.pid"
    pid = int(pid_file.read_text())
    try:
        wait_for(lambda: "test-agent-bg" in workers(embedded_server), 60, "the agent to register")
        again = conveyor(env, "daemon", "--queue", "bg", "--detached")
        assert again.returncode == 1 and "is running" in again.stderr
    finally:
        stopped = conveyor(env, "daemon", "--stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"pid {pid}" in stopped.stdout
    assert not pid_file.exists()
    assert "test-agent-bg" not in workers(embedded_server)
    assert conveyor(env, "daemon", "--stop").returncode == 1  # nothing left to stop


def test_detached_that_dies_at_once_says_why(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    env = agent_env(embedded_server, tmp_path / "data", tmp_path / "cache", "bg2")
    out = conveyor(env, "daemon", "--queue", "no-such-queue", "--detached")
    assert out.returncode == 1
    assert "exited at once" in out.stderr and "no-such-queue" in out.stderr


def test_a_services_agent_joins_the_embedded_default(tmp_path: Path) -> None:
    """The documented pair on one machine: `daemon --detached` starts the embedded control
    plane; `daemon --queue services --services-mode --create-queue --detached` joins it."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))},
        "CONVEYOR_DATA_DIR": str(tmp_path / "data"),
        "CONVEYOR_CACHE_DIR": str(tmp_path / "cache"),
        "CONVEYOR_EMBEDDED_PORT": "0",
        "CONVEYOR_CONFIG": "",
        "CONVEYOR_LOG_FORMAT": "json",
    }
    host = socket.gethostname()
    first = conveyor(env, "daemon", "--detached")
    assert first.returncode == 0, first.stdout + first.stderr
    try:
        second = conveyor(
            env, "daemon", "--queue", "services", "--services-mode", "--create-queue", "--detached"
        )
        assert second.returncode == 0, second.stdout + second.stderr
        listed = conveyor(env, "ls", "workers")
        assert (
            f"{host}:conveyor\t" in listed.stdout and f"{host}:conveyor-services\t" in listed.stdout
        )
    finally:
        conveyor(env, "daemon", "--services-mode", "--stop")
        stopped = conveyor(env, "daemon", "--stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
