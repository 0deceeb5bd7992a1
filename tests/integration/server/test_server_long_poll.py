"""queues.wait_for_entries, Conveyor's long poll: answered at once when a queue has entries,
woken by an enqueue or a watchdog requeue, empty after its timeout, cut short by a stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.server.embedded import EmbeddedServer
from agent.server.state import API_VERSION
from agent.server.watchdog import sweep
from tests.helpers import api_call, api_raw, token_for, wait_for

WAIT = 30.0  # every wait in these tests gives up after this long


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path / "s.db", watchdog_interval=3600) as srv:
        yield srv


class LongPoll(threading.Thread):
    """One wait_for_entries request in a thread; ``answer`` once it returned."""

    def __init__(self, server: EmbeddedServer, queues: list[str], timeout: float) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.url}/v{API_VERSION}/queues.wait_for_entries"
        self.headers = {"Authorization": f"Bearer {token_for(server)}"}
        self.body = {"queues": queues, "timeout": timeout}
        self.answer: dict[str, Any] | None = None
        self.start()

    def run(self) -> None:
        response = httpx.post(self.url, json=self.body, headers=self.headers, timeout=120)
        self.answer = response.json()

    def result(self) -> list[str]:
        self.join(WAIT)
        assert self.answer is not None, "the long poll did not answer"
        assert self.answer["meta"]["result_code"] == 200, self.answer["meta"]
        found: list[str] = self.answer["data"]["queues"]
        return found


def queue(server: EmbeddedServer, name: str) -> str:
    return str(api_call(server, "queues.create", {"name": name})["id"])


def enqueue(server: EmbeddedServer, queue_id: str) -> str:
    task = str(api_call(server, "tasks.create", {"name": "t", "type": "training"})["id"])
    api_call(server, "tasks.enqueue", {"task": task, "queue": queue_id})
    return task


def waiting(server: EmbeddedServer, count: int = 1) -> None:
    wait_for(lambda: len(server.state.queue_waiters) == count, WAIT)


def test_answers_at_once_when_a_queue_has_entries(server: EmbeddedServer) -> None:
    a, b = queue(server, "a"), queue(server, "b")
    enqueue(server, b)
    assert api_call(server, "queues.wait_for_entries", {"queues": [a, b], "timeout": 60}) == {
        "queues": [b]
    }


def test_an_enqueue_wakes_the_waiters_of_that_queue_only(server: EmbeddedServer) -> None:
    a, b = queue(server, "a"), queue(server, "b")
    on_a, on_b = LongPoll(server, [a], 60), LongPoll(server, [b], 60)
    waiting(server, 2)
    enqueue(server, a)
    assert on_a.result() == [a]
    assert on_b.is_alive()  # still waiting: nothing arrived on b
    enqueue(server, b)
    assert on_b.result() == [b]


def test_a_poll_without_entries_ends_empty_after_its_timeout(server: EmbeddedServer) -> None:
    a = queue(server, "a")
    started = time.monotonic()
    assert api_call(server, "queues.wait_for_entries", {"queues": [a], "timeout": 0.3}) == {
        "queues": []
    }
    assert time.monotonic() - started >= 0.3
    assert len(server.state.queue_waiters) == 0


def test_a_watchdog_requeue_wakes_the_waiters(server: EmbeddedServer) -> None:
    a = queue(server, "a")
    task = enqueue(server, a)
    api_call(server, "workers.register", {"worker": "w", "queues": [a], "timeout": 60})
    assert api_call(server, "queues.get_next_task", {"queue": a})["entry"]["task"] == task
    api_call(server, "tasks.started", {"task": task, "force": True})
    api_call(server, "workers.status_report", {"worker": "w", "task": task, "queue": a})
    poll = LongPoll(server, [a], 60)
    waiting(server)
    [rescue] = sweep(server.state, now=time.time() + 3600)  # the worker went silent
    assert rescue.requeued_to == a
    assert poll.result() == [a]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"timeout": 1}, "non-empty list"),
        ({"queues": [], "timeout": 1}, "non-empty list"),
        ({"queues": ["no-such-queue"], "timeout": 1}, "no-such-queue"),
    ],
)
def test_bad_requests_are_refused_at_once(
    server: EmbeddedServer, body: dict[str, Any], words: str
) -> None:
    response = api_raw(server, "queues.wait_for_entries", body)
    assert response.status_code == 400 and words in response.json()["meta"]["result_msg"]


def test_a_stop_ends_the_long_polls_at_once(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "s.db")
    server.start()
    poll = LongPoll(server, [queue(server, "a")], 60)
    waiting(server)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < WAIT  # not the poll's 60 s
    assert poll.result() == []
