"""Helpers shared by the fault, load and security suites (import as ``tests.faults.reliability``).

Agents are real ``conveyor daemon`` processes (see tests/integration/daemon/support.py); these
helpers add what those suites need beyond it: starting a second incarnation of the same agent
(same worker id, same data directory), reading a task's whole console in storage order, and
watching a process's memory.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import CONVEYOR, Agent, agent_env, wait_for

AGENT_PREFIX = "conveyor: "
READY_TIMEOUT = 60.0
EVENTS_PAGE = 500


def ensure_queue(server: EmbeddedServer, name: str) -> str:
    found = api_call(server, "queues.get_all", {"name": f"^{name}$"})["queues"]
    if found:
        return str(found[0]["id"])
    return str(api_call(server, "queues.create", {"name": name})["id"])


def launch(
    server: EmbeddedServer,
    data_dir: Path,
    cache: Path,
    queue: str,
    *extra: str,
    worker_id: str | None = None,
    log_name: str = "agent.log",
    env: dict[str, str] | None = None,
) -> Agent:
    """Start ``conveyor daemon`` on ``queue`` and wait until it says it is ready.

    Unlike ``support.start_agent`` this may start a second incarnation of an agent (same
    ``worker_id`` and ``data_dir``, the queue already there): readiness is the agent's own
    "agent ready" log event, not the worker appearing on the server (it may still be listed
    from the previous incarnation).
    """
    ensure_queue(server, queue)
    variables = {**agent_env(server, data_dir, cache, queue), **(env or {})}
    if worker_id is not None:
        variables["CONVEYOR_WORKER_ID"] = worker_id
    log_path = data_dir / log_name
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(CONVEYOR), "daemon", "--queue", queue, *extra],
            env=variables,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    agent = Agent(process, log_path, server, queue)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"agent exited early ({process.returncode}):\n{agent.log()}")
        return '"agent ready"' in agent.log()

    wait_for(ready, READY_TIMEOUT, "the agent to be ready")
    return agent


def stop(agent: Agent, timeout: float = 60) -> None:
    """Two SIGTERMs (drain cut short), then SIGKILL if it still has not exited."""
    if agent.process.poll() is not None:
        return
    agent.process.terminate()
    agent.process.terminate()
    try:
        agent.wait(timeout)
    except subprocess.TimeoutExpired:
        agent.process.kill()
        agent.wait(10)


def log_events(agent: Agent) -> list[dict[str, Any]]:
    """The agent's own structlog events (JSON lines of its log file)."""
    out = []
    for line in agent.log().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def iter_log_events(server: EmbeddedServer, task_id: str) -> Iterator[dict[str, Any]]:
    """Every log event of ``task_id`` as the server stored it (storage order), page by page."""
    scroll: str | None = None
    while True:
        body: dict[str, Any] = {"task": task_id, "batch_size": EVENTS_PAGE, "event_type": "log"}
        if scroll:
            body["scroll_id"] = scroll
        data = api_call(server, "events.get_task_events", body)
        if not data["events"]:
            return
        scroll = data["scroll_id"]
        yield from data["events"]


def iter_records(server: EmbeddedServer, task_id: str) -> Iterator[tuple[str, str]]:
    """``(level, line)`` for every console record of the task, in the order it was sent.

    The agent packs consecutive lines into one event joined by newlines (a record never holds
    a newline itself), so splitting each event's ``msg`` gives the records back exactly.
    """
    for event in iter_log_events(server, task_id):
        for line in str(event["msg"]).split("\n"):
            yield str(event.get("level", "")), line


def task_records(server: EmbeddedServer, task_id: str) -> list[str]:
    """The task's own output records (the agent's ``conveyor:`` lines left out)."""
    return [line for _, line in iter_records(server, task_id) if not line.startswith(AGENT_PREFIX)]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_all(pids: list[int]) -> None:
    """Clean-up after a failed test: no process it started may outlive it."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            continue


@dataclass
class RssSampler:
    """Samples the resident memory of a process (and its children) in a thread: ``peak``."""

    pid: int
    interval: float = 0.05
    include_children: bool = False
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            proc = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.wait(self.interval):
            try:
                rss = proc.memory_info().rss
                if self.include_children:
                    for child in proc.children(recursive=True):
                        try:
                            rss += child.memory_info().rss
                        except psutil.NoSuchProcess:
                            continue
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
