"""Helpers for the SDK conformance suite: run an SDK script, wait on a task, read it back."""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, result_of, run_sdk
from tests.integration.daemon.support import (
    CONVEYOR,
    Agent,
    agent_env,
    console_text,
    task_doc,
    wait_final,
    wait_for,
)

__all__ = ["console_text", "run", "sdk_result", "task_doc", "wait_final", "wait_status"]


@dataclass
class Plane:
    """What every SDK case needs: the server, the SDK's environment, the two agents."""

    server: EmbeddedServer
    env: dict[str, str]
    default: Agent
    services: Agent


def start_agent(server: EmbeddedServer, root: Path, cache: Path, queue: str, *flags: str) -> Agent:
    env = agent_env(server, root / queue, cache, queue)
    env["CONVEYOR_POLL_WAIT"] = "5"
    # The API host is "configured" here (not the agent's own embedded one): name the files
    # host, or tasks would get the SDK's guess (port 8081) and their uploads would fail.
    env["CONVEYOR_FILES_HOST"] = server.files_host
    # The tasks' SDK reports from a thread, as the local scripts do (tests/helpers.sdk_env):
    # its default reporting subprocess holds every SDK process ~10 s at exit.
    config = root / "task-clearml.conf"
    config.write_text("sdk { development { report_use_subprocess: false } }\n")
    env["CONVEYOR_EXTRA_ENV"] = f"CLEARML_CONFIG_FILE={config}"
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


# Prepended to every script: the RESULT line the tests read back.
PRELUDE = "import json\ndef emit(value):\n    print('RESULT ' + json.dumps(value), flush=True)\n"


def run(plane: Plane, code: str, timeout: float = 180, **env: str) -> Any:
    """Run ``code`` (with ``emit(value)`` available) as a local SDK script; its emitted value."""
    return result_of(
        run_sdk(PRELUDE + textwrap.dedent(code), {**plane.env, **env}, timeout=timeout)
    )


def sdk_result(plane: Plane, code: str, timeout: float = 180) -> Any:
    return run(plane, code, timeout)


def wait_status(plane: Plane, task_id: str, timeout: float = 240) -> dict[str, Any]:
    """The task's document once it has ended (completed, failed or stopped)."""
    return wait_final(plane.server, task_id, timeout=timeout)


def tasks_named(plane: Plane, pattern: str) -> list[dict[str, Any]]:
    data = api_call(
        plane.server,
        "tasks.get_all",
        {"name": pattern, "only_fields": ["id", "name", "status", "parent"], "search_hidden": True},
    )
    tasks: list[dict[str, Any]] = data["tasks"]
    return tasks
