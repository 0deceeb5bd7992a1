"""Applying the retry policy with the real client against the real server: a lost task goes back
to the FRONT of its queue with its counter raised and a closing console line; a task that moved
on meanwhile is left alone; a user's requeue clears the counter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from agent import retry
from agent.api.client import ApiClient
from agent.pipeline.requeue import apply_verdict, clear_attempts, recover_lost_tasks
from agent.server.embedded import EmbeddedServer


@pytest.fixture
async def api(shared_server: EmbeddedServer) -> AsyncIterator[ApiClient]:
    creds = shared_server.credentials
    async with ApiClient(
        shared_server.url, creds.access_key, creds.secret_key, worker_id="rq:0", retry_for=10
    ) as client:
        yield client


async def _queue_with(api: ApiClient, *names: str) -> tuple[str, list[str]]:
    queue = await api.create_queue(f"rq-{uuid.uuid4().hex[:8]}")
    ids = []
    for name in names:
        task_id = await api.create_task(name, script={"diff": "print(1)\n"})
        await api.enqueue(task_id, queue)
        ids.append(task_id)
    return queue, ids


async def _entries(api: ApiClient, queue: str) -> list[str]:
    data = await api.call("queues.get_by_id", {"queue": queue})
    return [e["task"] for e in data["queue"]["entries"]]


async def test_a_lost_task_is_requeued_at_the_front_with_its_counter(api: ApiClient) -> None:
    queue, (lost, waiting) = await _queue_with(api, "lost", "waiting")
    assert await api.get_next_task(queue, "rq:0") == lost
    await api.started(lost)
    await api.register_worker("rq:0", [queue])
    await api.status_report("rq:0", queues=[queue], task=lost, queue=queue)
    handled = await recover_lost_tasks(api, lambda w: w == "rq:0", {queue: 2}, 2, "rq:0")
    assert handled == 1
    doc = await api.get_task_document(lost)
    assert (doc["status"], doc["status_reason"]) == ("queued", "lost worker")
    assert doc["status_message"] == "lost worker: requeued (attempt 2 of 3)"
    assert doc["runtime"]["conveyor_attempt"] == 2
    assert await _entries(api, queue) == [lost, waiting]
    log = [e["msg"] for e in await api.get_task_log(lost)]
    assert log[-1] == (
        "conveyor: attempt 1 lost: the agent restarted while running it; requeued (attempt 2 of 3)"
    )
    # nothing in progress on this worker any more: a second recovery finds nothing
    assert await recover_lost_tasks(api, lambda w: w == "rq:0", {queue: 2}, 2, "rq:0") == 0

    await clear_attempts(api, lost)
    assert "conveyor_attempt" not in (await api.get_task_document(lost)).get("runtime", {})


async def test_a_task_that_moved_on_is_left_alone(api: ApiClient) -> None:
    queue, (task_id,) = await _queue_with(api, "moved on")
    verdict = retry.decide(retry.Cause.AGENT_RESTARTED, 1, retry.Limits())
    assert not await apply_verdict(api, task_id, queue, {}, verdict, "rq:0")  # queued, not ours
    doc = await api.get_task_document(task_id)
    assert (doc["status"], doc["status_reason"]) == ("queued", "")
    assert await _entries(api, queue) == [task_id]


async def test_no_retries_left_fails_the_task(api: ApiClient) -> None:
    queue, (task_id,) = await _queue_with(api, "last try")
    assert await api.get_next_task(queue, "rq:0") == task_id
    await api.started(task_id)
    verdict = retry.decide(retry.Cause.AGENT_RESTARTED, 3, retry.Limits())
    assert await apply_verdict(api, task_id, queue, {"conveyor_attempt": 3}, verdict, "rq:0")
    doc = await api.get_task_document(task_id)
    assert (doc["status"], doc["status_reason"]) == ("failed", "lost worker")
    assert "no retries left" in doc["status_message"]
    assert await _entries(api, queue) == []
