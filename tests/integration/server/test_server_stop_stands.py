"""A stop request stands until the task has ended, whatever the task itself sends.

The SDK's `Task.init` in a task an agent runs sends `tasks.started` (no force); a task pings and
edits itself. None of that may erase a `tasks.stop` the agent has not acted on yet; and a task
stopped between its pop and its start is not started, even by a forced `tasks.started`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, api_raw


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path / "s.db", watchdog_interval=3600) as srv:
        yield srv


def _popped(server: EmbeddedServer, worker: str = "agent-1") -> str:
    """A task queued and popped by a registered worker (not yet started)."""
    queue = api_call(server, "queues.create", {"name": "q"})["id"]
    api_call(server, "workers.register", {"worker": worker, "queues": [queue], "timeout": 60})
    task = api_call(server, "tasks.create", {"name": "t", "type": "training"})["id"]
    api_call(server, "tasks.enqueue", {"task": task, "queue": queue})
    headers = {"X-ClearML-Worker": worker}
    reply = api_raw(server, "queues.get_next_task", {"queue": queue}, headers=headers).json()
    assert reply["data"]["entry"]["task"] == task
    return str(task)


def _status(server: EmbeddedServer, task: str) -> tuple[str, str]:
    doc = api_call(server, "tasks.get_by_id", {"task": task})["task"]
    return doc["status"], doc["status_message"]


def _running(server: EmbeddedServer) -> str:
    task = _popped(server)
    body = {"task": task, "force": True, "status_message": "pulled by agent"}
    api_raw(server, "tasks.started", body, headers={"X-ClearML-Worker": "agent-1"})
    api_call(server, "workers.status_report", {"worker": "agent-1", "task": task})
    assert _status(server, task) == ("in_progress", "pulled by agent")
    return task


def test_the_tasks_own_started_ping_and_edit_keep_the_stop(server: EmbeddedServer) -> None:
    task = _running(server)
    api_call(server, "tasks.stop", {"task": task})
    assert _status(server, task) == ("in_progress", "stopping")
    api_call(server, "tasks.started", {"task": task})  # what Task.init sends
    api_call(server, "tasks.started", {"task": task, "force": True, "status_message": "again"})
    api_call(server, "tasks.ping", {"task": task})
    api_call(server, "tasks.edit", {"task": task, "runtime": {"progress": 1}, "force": True})
    assert _status(server, task) == ("in_progress", "stopping")
    doc = api_call(server, "tasks.get_by_id", {"task": task})["task"]
    assert doc["status_reason"] == "stopped by user"
    api_call(server, "tasks.stopped", {"task": task, "force": True, "status_reason": "aborted"})
    assert _status(server, task)[0] == "stopped"


def test_a_task_that_ended_can_start_again(server: EmbeddedServer) -> None:
    """The stop ends with the task: a later run (re-enqueue, continue) starts clean."""
    task = _running(server)
    api_call(server, "tasks.stop", {"task": task})
    api_call(server, "tasks.stopped", {"task": task, "force": True})
    api_call(server, "tasks.started", {"task": task, "force": True, "status_message": "again"})
    assert _status(server, task) == ("in_progress", "again")


def test_a_task_stopped_between_pop_and_start_is_not_started(server: EmbeddedServer) -> None:
    task = _popped(server)
    api_call(server, "tasks.stop", {"task": task})
    assert _status(server, task)[0] == "stopped"
    body: dict[str, Any] = {"task": task, "force": True, "status_message": "pulled by agent"}
    response = api_raw(server, "tasks.started", body, headers={"X-ClearML-Worker": "agent-1"})
    meta = response.json()["meta"]
    assert (response.status_code, meta["result_subcode"]) == (400, 110), meta
    assert "stopped after a worker popped it" in meta["result_msg"]
    assert _status(server, task)[0] == "stopped"
