"""A worker that goes away between queues.get_next_task and tasks.started gives the task back:
the watchdog dropping it, its unregistering or a new process registering under its id requeue
the task at the front of its queue; a live worker's pop and a started task are never touched."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.server.claims import NEVER_STARTED
from agent.server.embedded import EmbeddedServer
from agent.server.watchdog import sweep
from tests.helpers import api_call, api_raw


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    # The watchdog thread effectively never runs: tests call sweep() with a chosen clock.
    with EmbeddedServer(tmp_path / "s.db", watchdog_interval=3600) as srv:
        yield srv


def setup_queue(server: EmbeddedServer, *names: str) -> tuple[str, list[str]]:
    queue = str(api_call(server, "queues.create", {"name": "cq"})["id"])
    tasks = []
    for name in names:
        task = str(api_call(server, "tasks.create", {"name": name, "type": "training"})["id"])
        api_call(server, "tasks.enqueue", {"task": task, "queue": queue})
        tasks.append(task)
    return queue, tasks


def pop(server: EmbeddedServer, queue: str, worker: str) -> str:
    api_call(server, "workers.register", {"worker": worker, "queues": [queue], "timeout": 60})
    headers = {"X-ClearML-Worker": worker}
    reply = api_raw(server, "queues.get_next_task", {"queue": queue}, headers=headers).json()
    return str(reply["data"]["entry"]["task"])


def entries(server: EmbeddedServer, queue: str) -> list[str]:
    doc = api_call(server, "queues.get_by_id", {"queue": queue})["queue"]
    return [e["task"] for e in doc["entries"]]


def task(server: EmbeddedServer, task_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = api_call(server, "tasks.get_by_id", {"task": task_id})["task"]
    return doc


def test_a_worker_lost_before_starting_gives_its_task_back_at_the_front(
    server: EmbeddedServer,
) -> None:
    queue, (first, second) = setup_queue(server, "first", "second")
    assert pop(server, queue, "w1") == first
    assert entries(server, queue) == [second]
    sweep(server.state, now=time.time() + 3600)  # w1 went silent
    assert entries(server, queue) == [first, second]
    doc = task(server, first)
    assert doc["status"] == "queued" and doc["status_reason"] == NEVER_STARTED


@pytest.mark.parametrize("event", ["workers.unregister", "workers.register"])
def test_unregistering_or_a_new_process_under_the_id_gives_it_back(
    server: EmbeddedServer, event: str
) -> None:
    queue, (first,) = setup_queue(server, "first")
    assert pop(server, queue, "w1") == first
    api_call(server, event, {"worker": "w1", "queues": [queue]})
    assert entries(server, queue) == [first]
    assert pop(server, queue, "w1") == first  # and it can be claimed again


def test_a_started_task_and_a_live_worker_keep_theirs(server: EmbeddedServer) -> None:
    queue, (started, popped) = setup_queue(server, "started", "popped")
    assert pop(server, queue, "w1") == started
    api_call(server, "tasks.started", {"task": started})
    api_call(server, "workers.unregister", {"worker": "w1"})  # after the start: not lost
    assert task(server, started)["status"] == "in_progress"
    assert pop(server, queue, "w2") == popped
    assert sweep(server.state, now=time.time() + 1) == []  # w2 alive: its pop stays its own
    assert entries(server, queue) == []
    assert task(server, popped)["status"] == "queued"


def test_a_pop_without_a_worker_header_is_not_recorded(server: EmbeddedServer) -> None:
    queue, (first,) = setup_queue(server, "first")
    assert api_call(server, "queues.get_next_task", {"queue": queue})["entry"]["task"] == first
    api_call(server, "workers.register", {"worker": "w1", "queues": [queue]})
    assert entries(server, queue) == []  # nobody to give it back for: documented gap
