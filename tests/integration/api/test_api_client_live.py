"""ApiClient against the real embedded server over HTTP: every method a daemon relies on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from agent.api.client import ApiClient
from agent.api.errors import AlreadyQueuedError, AuthError, NotFoundError, ServerUnavailable
from agent.server.embedded import EmbeddedServer


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def api(shared_server: EmbeddedServer) -> AsyncIterator[ApiClient]:
    creds = shared_server.credentials
    async with ApiClient(
        shared_server.url, creds.access_key, creds.secret_key, worker_id="test:0", retry_for=10
    ) as client:
        yield client


async def test_task_lifecycle_through_a_queue(api: ApiClient) -> None:
    project_name = unique("proj")
    project = await api.get_project_id(project_name)
    assert project and await api.get_project_id(project_name, create=False) == project
    with pytest.raises(NotFoundError):
        await api.get_project_id(unique("nope"), create=False)
    queue = await api.create_queue(unique("q"))
    script = {"repository": "https://h/r.git", "entry_point": "train.py", "branch": "main"}
    hyper = {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1", "type": "float"}}}
    task_id = await api.create_task("train", project, script=script, hyperparams=hyper)

    await api.enqueue(task_id, queue)
    with pytest.raises(AlreadyQueuedError):
        await api.enqueue(task_id, queue)
    assert (await api.task_status(task_id))[0] == "queued"

    assert await api.get_next_task(queue) == task_id
    assert await api.get_next_task(queue) is None
    await api.started(task_id)
    spec = await api.get_task(task_id)
    assert spec.script.entry_point == "train.py"
    assert spec.hyperparams["Args"]["lr"].value == "0.1"
    assert spec.queue_id == queue

    await api.set_requirements(task_id, "numpy==1.26.4\n", "numpy\n")
    await api.edit_task(task_id, {"script": {"version_num": "abc123"}})
    await api.ping(task_id)
    doc = await api.get_task_document(task_id)
    assert doc["script"]["requirements"]["pip"] == "numpy==1.26.4\n"
    assert doc["script"]["version_num"] == "abc123"

    await api.stop_task(task_id, "user abort")
    status, message = await api.task_status(task_id)
    assert status == "stopped" or (status, message) == ("in_progress", "stopping")
    await api.stopped(task_id, "aborted by user")
    assert (await api.task_status(task_id))[0] == "stopped"
    await api.reset_task(task_id)
    assert (await api.task_status(task_id))[0] == "created"
    await api.enqueue(task_id, queue)
    assert await api.get_next_task(queue) == task_id
    await api.started(task_id)
    await api.completed(task_id)
    assert (await api.task_status(task_id))[0] == "completed"
    assert any(t["id"] == task_id for t in await api.list_tasks(id=[task_id]))


async def test_failed_records_the_reason(api: ApiClient) -> None:
    task_id = await api.create_task(unique("t"))
    await api.started(task_id)
    await api.failed(task_id, "exit code 3")
    doc = await api.get_task_document(task_id)
    assert (doc["status"], doc["status_reason"]) == ("failed", "exit code 3")


async def test_queues_by_name_and_default(api: ApiClient) -> None:
    name = unique("gpu")
    queue = await api.create_queue(name)
    assert await api.queue_id(name) == queue
    assert await api.queue_id(queue) == queue
    with pytest.raises(NotFoundError, match="no queue named"):
        await api.queue_id(unique("missing"))
    default = await api.default_queue_id()
    assert any(q["id"] == default for q in await api.list_queues())


async def test_workers_register_report_unregister(api: ApiClient) -> None:
    worker = unique("box")
    queue = await api.create_queue(unique("q"))
    await api.register_worker(worker, [queue])
    stats = {"cpu_usage": [10.0], "memory_used": 100.0, "memory_free": 900.0}
    await api.status_report(worker, queues=[queue], machine_stats=stats)
    assert any(w.get("id") == worker for w in await api.list_workers())
    await api.unregister_worker(worker)
    assert not any(w.get("id") == worker for w in await api.list_workers())


async def test_log_events_and_scalars_round_trip(api: ApiClient) -> None:
    task_id = await api.create_task(unique("t"))
    events = [
        {"type": "log", "task": task_id, "level": "info", "msg": f"line {i}", "timestamp": 1000 + i}
        for i in range(20)
    ]
    await api.add_events(events)
    log = await api.get_task_log(task_id, last=5)
    assert [e["msg"] for e in log] == [f"line {i}" for i in range(15, 20)]
    since = await api.get_task_log_since(task_id, 1017, limit=2)  # from 1017 on, the oldest
    assert [e["msg"] for e in since] == ["line 17", "line 18"]
    await api.add_scalars(task_id, ":monitor:machine", {"cpu_usage": 12.5}, iteration=3)
    doc = await api.get_task_document(task_id)
    values = [v for m in doc["last_metrics"].values() for v in m.values()]
    assert any(v["variant"] == "cpu_usage" and v["value"] == 12.5 for v in values)


async def test_get_model(api: ApiClient) -> None:
    data = await api.call("models.create", {"name": "base", "uri": "file:///m/base.pt"})
    info = await api.get_model(data["id"])
    assert (info.name, info.uri) == ("base", "file:///m/base.pt")
    with pytest.raises(NotFoundError):
        await api.get_model("no-such-model")


async def test_unknown_task_is_not_found(api: ApiClient) -> None:
    with pytest.raises(NotFoundError):
        await api.get_task("no-such-task")
    with pytest.raises(NotFoundError):
        await api.task_status("no-such-task")


async def test_wrong_secret_is_an_auth_error(shared_server: EmbeddedServer) -> None:
    creds = shared_server.credentials
    async with ApiClient(shared_server.url, creds.access_key, "wrong", retry_for=5) as bad:
        with pytest.raises(AuthError):
            await bad.list_queues()


async def test_unreachable_server_exhausts_the_budget() -> None:
    async with ApiClient("http://127.0.0.1:9", "k", "s", retry_for=0.5) as api:
        with pytest.raises(ServerUnavailable, match="unavailable"):
            await api.list_queues()
