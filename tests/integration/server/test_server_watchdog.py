"""The worker watchdog: a silent worker's task goes back to the front of its queue, N times,
then fails with "lost worker"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from agent.server.watchdog import LOST_WORKER, Outcome, sweep
from tests.helpers import api_call, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    # The watchdog thread effectively never runs: tests call sweep() with a chosen clock.
    with EmbeddedServer(tmp_path / "s.db", watchdog_interval=3600, max_retries=2) as srv:
        yield srv


def _queue(server: EmbeddedServer) -> str:
    return str(api_call(server, "queues.create", {"name": "wq"})["id"])


def _enqueue(server: EmbeddedServer, queue: str, name: str) -> str:
    task = str(api_call(server, "tasks.create", {"name": name, "type": "training"})["id"])
    api_call(server, "tasks.enqueue", {"task": task, "queue": queue})
    return task


def _claim(server: EmbeddedServer, queue: str, worker: str) -> str:
    api_call(server, "workers.register", {"worker": worker, "queues": [queue], "timeout": 60})
    task = str(api_call(server, "queues.get_next_task", {"queue": queue})["entry"]["task"])
    api_call(server, "tasks.started", {"task": task, "force": True})
    api_call(server, "workers.status_report", {"worker": worker, "task": task, "queue": queue})
    return task


def _entries(server: EmbeddedServer, queue: str) -> list[str]:
    return [
        e["task"]
        for e in api_call(server, "queues.get_by_id", {"queue": queue})["queue"]["entries"]
    ]


def _task(server: EmbeddedServer, task: str) -> dict[str, Any]:
    doc: dict[str, Any] = api_call(server, "tasks.get_by_id", {"task": task})["task"]
    return doc


def _later(seconds: float) -> float:
    return time.time() + seconds


def test_lost_worker_task_requeued_at_front_then_failed(server: EmbeddedServer) -> None:
    queue = _queue(server)
    first = _enqueue(server, queue, "first")
    second = _enqueue(server, queue, "second")

    for attempt in (1, 2):
        assert _claim(server, queue, f"w{attempt}") == first
        assert sweep(server.state, now=_later(30)) == []  # within the 60 s timeout: kept
        rescues = sweep(server.state, now=_later(61))
        assert [(r.worker, r.task, r.decision.outcome) for r in rescues] == [
            (f"w{attempt}", first, Outcome.REQUEUE)
        ]
        assert _entries(server, queue) == [first, second]  # at the front, ahead of second
        task = _task(server, first)
        assert task["status"] == "queued"
        assert task["status_reason"] == LOST_WORKER
        assert task["status_message"] == f"lost worker: requeued (attempt {attempt + 1} of 3)"
        assert task["runtime"]["conveyor_attempt"] == attempt + 1
        lines = [
            e["msg"]
            for e in api_call(server, "events.get_task_log", {"task": first, "order": "asc"})[
                "events"
            ]
        ]
        assert lines[-1] == (
            f"conveyor: attempt {attempt} lost: its agent stopped reporting (worker timeout); "
            f"requeued (attempt {attempt + 1} of 3)"
        )

    assert _claim(server, queue, "w3") == first
    [rescue] = sweep(server.state, now=_later(61))
    assert rescue.decision.outcome is Outcome.FAIL
    task = _task(server, first)
    assert task["status"] == "failed"
    assert task["status_reason"] == LOST_WORKER
    assert "attempt 3 of 3, no retries left" in task["status_message"]
    assert _entries(server, queue) == [second]
    assert api_call(server, "workers.get_all")["workers"] == []


def test_reporting_worker_is_kept_and_finished_task_left_alone(server: EmbeddedServer) -> None:
    queue = _queue(server)
    _enqueue(server, queue, "t")
    task = _claim(server, queue, "w")
    api_call(server, "tasks.completed", {"task": task})
    [rescue] = sweep(server.state, now=_later(61))
    assert rescue.decision.outcome is Outcome.NOTHING
    assert _task(server, task)["status"] == "completed"


def test_reset_clears_the_attempt_counter(server: EmbeddedServer) -> None:
    queue = _queue(server)
    task = _enqueue(server, queue, "t")
    for worker in ("a", "b"):
        _claim(server, queue, worker)
        sweep(server.state, now=_later(61))
    api_call(server, "tasks.dequeue", {"task": task})
    api_call(server, "tasks.reset", {"task": task})
    api_call(server, "tasks.enqueue", {"task": task, "queue": queue})
    assert "conveyor_attempt" not in _task(server, task).get("runtime", {})
    _claim(server, queue, "c")
    [rescue] = sweep(server.state, now=_later(61))
    assert rescue.decision.outcome is Outcome.REQUEUE
    assert rescue.decision.next_attempt == 2


def test_watchdog_thread_requeues_with_a_short_timeout(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path / "s.db", worker_timeout=0.5, watchdog_interval=0.1) as srv:
        queue = _queue(srv)
        task = _enqueue(srv, queue, "t")
        _claim(srv, queue, "silent")
        wait_for(lambda: _task(srv, task)["status"] == "queued", timeout=10)
        assert _entries(srv, queue) == [task]


def test_a_server_outage_is_not_held_against_its_workers(server: EmbeddedServer) -> None:
    queue = _queue(server)
    task = _enqueue(server, queue, "t")
    _claim(server, queue, "w")
    restarted = _later(50)  # the server was down for 50 s of the worker's 60 s timeout
    assert sweep(server.state, now=_later(61), since=restarted) == []
    assert _task(server, task)["status"] == "in_progress"
    [rescue] = sweep(server.state, now=_later(111), since=restarted)  # 61 s after the restart
    assert rescue.decision.outcome is Outcome.REQUEUE
