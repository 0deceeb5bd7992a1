"""Helpers for end-to-end agent tests: real git repositories and a real `conveyor daemon`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.server.embedded import EmbeddedServer
from tests.helpers import REPO_ROOT, api_call

CONVEYOR = REPO_ROOT / ".venv" / "bin" / "conveyor"
FINAL = ("completed", "failed", "stopped")


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
        env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"},
    )  # fmt: skip
    return out.stdout.strip()


@dataclass
class Repo:
    url: str
    work: Path

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")


@dataclass
class Agent:
    process: subprocess.Popen[bytes]
    log_path: Path
    server: EmbeddedServer
    queue: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Stop now (SIGTERM twice: no drain), killed if it takes more than a minute."""
        if self.process.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGTERM)
        try:
            self.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.wait(10)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def task_doc(server: EmbeddedServer, task_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = api_call(server, "tasks.get_by_id", {"task": task_id})["task"]
    return doc


def wait_final(server: EmbeddedServer, task_id: str, timeout: float = 180) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        doc = task_doc(server, task_id)
        return doc if doc["status"] in FINAL else None

    result: dict[str, Any] = wait_for(final, timeout, f"task {task_id} to finish", every=0.2)
    return result


def console_text(server: EmbeddedServer, task_id: str) -> str:
    data = api_call(
        server,
        "events.get_task_log",
        {"task": task_id, "batch_size": 10000, "navigate_earlier": True, "order": "asc"},
    )
    return "\n".join(str(e.get("msg", "")) for e in data["events"])


def agent_env(server: EmbeddedServer, data_dir: Path, cache: Path, name: str) -> dict[str, str]:
    """The environment of a `conveyor` process pointed at ``server``, isolated dirs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = server.credentials
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))},
        "CONVEYOR_API_HOST": server.url,
        "CONVEYOR_ACCESS_KEY": creds.access_key,
        "CONVEYOR_SECRET_KEY": creds.secret_key,
        "CONVEYOR_DATA_DIR": str(data_dir),
        "CONVEYOR_CACHE_DIR": str(cache),
        "CONVEYOR_WORKER_ID": f"test-agent-{name}",
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_CONFIG": "",
        "CONVEYOR_ABORT_POLL_INTERVAL": "0.2",
        "CONVEYOR_ABORT_GRACE": "2",
    }


def start_agent(
    server: EmbeddedServer, data_dir: Path, cache: Path, queue: str, *extra: str,
    env: dict[str, str] | None = None,
) -> Agent:  # fmt: skip
    api_call(server, "queues.create", {"name": queue})
    log_path = data_dir / "agent.log"
    agent_env_vars = {**agent_env(server, data_dir, cache, queue), **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(CONVEYOR), "daemon", "--queue", queue, *extra],
            env=agent_env_vars, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    agent = Agent(process, log_path, server, queue)

    def registered() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"agent exited early:\n{agent.log()}")
        workers = api_call(server, "workers.get_all", {}).get("workers", [])
        return any(w.get("id") == f"test-agent-{queue}" for w in workers)

    wait_for(registered, 30, "the agent to register")
    return agent


def create_task(
    server: EmbeddedServer, name: str, script: dict[str, Any], queue: str = "q", **fields: Any
) -> str:
    task_id: str = api_call(
        server, "tasks.create", {"name": name, "type": "training", "script": script, **fields}
    )["id"]
    queue_id = api_call(server, "queues.get_all", {"name": f"^{queue}$"})["queues"][0]["id"]
    api_call(server, "tasks.enqueue", {"task": task_id, "queue": queue_id})
    return task_id
