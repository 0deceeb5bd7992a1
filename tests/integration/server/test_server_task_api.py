"""Task, queue, worker and event semantics over HTTP (what agents and the SDK rely on)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, api_raw

OBJECT_FIELDS = ("script", "execution", "output", "runtime", "container", "hyperparams")


def _task(server: EmbeddedServer, task_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = api_call(server, "tasks.get_by_id", {"task": task_id})["task"]
    return doc


def _new(server: EmbeddedServer, name: str = "t", **fields: Any) -> str:
    return str(api_call(server, "tasks.create", {"name": name, **fields})["id"])


def _queue(server: EmbeddedServer, name: str) -> str:
    return str(api_call(server, "queues.create", {"name": name})["id"])


def _code(response: Any) -> tuple[int, int]:
    meta = response.json()["meta"]
    return int(meta["result_code"]), int(meta["result_subcode"])


def test_documents_always_have_objects(shared_server: EmbeddedServer) -> None:
    doc = _task(shared_server, _new(shared_server))
    for field in (*OBJECT_FIELDS, "configuration"):
        assert isinstance(doc[field], dict), field
    assert doc["models"] == {"input": [], "output": []}
    assert doc["status"] == "created"
    listed = api_call(shared_server, "tasks.get_all", {"id": [doc["id"]]})["tasks"][0]
    assert all(isinstance(listed[f], dict) for f in OBJECT_FIELDS)


def test_edit_merges_and_replaces(shared_server: EmbeddedServer) -> None:
    task = _new(
        shared_server,
        script={"repository": "r", "branch": "main"},
        hyperparams={"Args": {"lr": {"section": "Args", "name": "lr", "value": "1"}}},
        container={"image": "a", "arguments": "--x"},
    )
    result = api_call(
        shared_server,
        "tasks.edit",
        {
            "task": task,
            "script": {"version_num": "abc"},
            "hyperparams": {"General": {}},
            "container": {"image": "b"},
            "output_dest": "file:///out",
        },
    )
    assert result["updated"] == 1
    doc = _task(shared_server, task)
    assert doc["script"] == {
        "repository": "r",
        "branch": "main",
        "version_num": "abc",
        "requirements": {},  # always an object: clients read script.requirements.pip
    }
    assert doc["hyperparams"] == {"General": {}}
    assert doc["container"] == {"image": "b"}
    assert doc["output"]["destination"] == "file:///out"


def test_edit_of_running_task_needs_force(shared_server: EmbeddedServer) -> None:
    task = _new(shared_server)
    api_call(shared_server, "tasks.started", {"task": task})
    refused = api_raw(shared_server, "tasks.edit", {"task": task, "script": {"x": "1"}})
    assert _code(refused) == (400, 110)
    api_call(shared_server, "tasks.edit", {"task": task, "script": {"x": "1"}, "force": True})
    api_call(shared_server, "tasks.edit", {"task": task, "name": "renamed"})  # always allowed
    assert _task(shared_server, task)["name"] == "renamed"


def test_state_machine(shared_server: EmbeddedServer) -> None:
    queue = _queue(shared_server, "sm-q")
    task = _new(shared_server)
    api_call(shared_server, "tasks.started", {"task": task})
    api_call(shared_server, "tasks.completed", {"task": task})
    refused = api_raw(shared_server, "tasks.enqueue", {"task": task, "queue": queue})
    assert _code(refused) == (400, 110)
    assert "completed" in refused.json()["meta"]["result_msg"]
    assert _code(api_raw(shared_server, "tasks.started", {"task": task})) == (400, 110)
    assert _task(shared_server, task)["status"] == "completed"
    # execute_remotely: forced stop of a completed task, then enqueue
    api_call(shared_server, "tasks.stopped", {"task": task, "force": True})
    api_call(shared_server, "tasks.enqueue", {"task": task, "queue": queue})
    again = api_raw(shared_server, "tasks.enqueue", {"task": task, "queue": queue})
    assert _code(again) == (400, 706)
    api_call(shared_server, "tasks.dequeue", {"task": task})
    doc = _task(shared_server, task)
    assert doc["status"] == "created"
    assert "queue" not in doc["execution"]
    api_call(shared_server, "tasks.started", {"task": task})
    assert _code(api_raw(shared_server, "tasks.dequeue", {"task": task})) == (400, 110)
    noop = api_call(shared_server, "tasks.dequeue", {"task": task, "new_status": "in_progress"})
    assert noop["dequeued"] == 0  # clearml-agent's child does this on a task already started
    api_call(shared_server, "tasks.failed", {"task": task, "status_reason": "boom"})
    doc = _task(shared_server, task)
    assert (doc["status"], doc["status_reason"]) == ("failed", "boom")
    api_call(shared_server, "tasks.reset", {"task": task})
    assert _task(shared_server, task)["status"] == "created"


def test_reset_of_completed_needs_force_and_clears_events(shared_server: EmbeddedServer) -> None:
    task = _new(shared_server)
    api_call(shared_server, "tasks.started", {"task": task})
    api_call(
        shared_server, "events.add_batch", {"requests": [{"task": task, "type": "log", "msg": "x"}]}
    )
    api_call(shared_server, "tasks.completed", {"task": task})
    assert _code(api_raw(shared_server, "tasks.reset", {"task": task})) == (400, 110)
    result = api_call(shared_server, "tasks.reset", {"task": task, "force": True})
    assert result["events"]["deleted"] == 1
    assert api_call(shared_server, "events.get_task_log", {"task": task})["total"] == 0


def test_published_is_immutable(shared_server: EmbeddedServer) -> None:
    task = _new(shared_server)
    api_call(shared_server, "tasks.started", {"task": task})
    api_call(shared_server, "tasks.completed", {"task": task, "publish": True})
    assert _task(shared_server, task)["status"] == "published"
    for endpoint, body in (
        ("tasks.edit", {"task": task, "script": {}, "force": True}),
        ("tasks.reset", {"task": task, "force": True}),
        ("tasks.started", {"task": task, "force": True}),
    ):
        assert _code(api_raw(shared_server, endpoint, body)) == (400, 110), endpoint


def test_queue_fifo_and_reordering(shared_server: EmbeddedServer) -> None:
    queue = _queue(shared_server, "fifo-q")
    tasks = [_new(shared_server, f"t{i}") for i in range(4)]
    for task in tasks:
        api_call(shared_server, "tasks.enqueue", {"task": task, "queue": queue})
    assert api_call(shared_server, "queues.get_num_entries", {"queue": queue})["num"] == 4
    api_call(shared_server, "queues.move_task_to_front", {"queue": queue, "task": tasks[2]})
    api_call(shared_server, "queues.move_task_to_back", {"queue": queue, "task": tasks[0]})
    entries = api_call(shared_server, "queues.get_by_id", {"queue": queue})["queue"]["entries"]
    assert [e["task"] for e in entries] == [tasks[2], tasks[1], tasks[3], tasks[0]]
    api_call(shared_server, "queues.remove_task", {"queue": queue, "task": tasks[1]})
    assert _task(shared_server, tasks[1])["status"] == "created"
    popped = [
        api_call(shared_server, "queues.get_next_task", {"queue": queue})["entry"]["task"]
        for _ in range(3)
    ]
    assert popped == [tasks[2], tasks[3], tasks[0]]
    assert api_call(shared_server, "queues.get_next_task", {"queue": queue}) == {}
    assert _task(shared_server, tasks[2])["status"] == "queued"  # the agent calls started


def test_enqueue_by_name_default_and_autocreate(shared_server: EmbeddedServer) -> None:
    default = api_call(shared_server, "queues.get_default")["id"]
    task = _new(shared_server)
    api_call(shared_server, "tasks.enqueue", {"task": task})
    assert _task(shared_server, task)["execution"]["queue"] == default
    api_call(shared_server, "tasks.dequeue", {"task": task})
    api_call(shared_server, "tasks.enqueue", {"task": task, "queue_name": "made-on-demand"})
    queues = api_call(shared_server, "queues.get_all", {"name": "^made-on-demand$"})["queues"]
    assert [e["task"] for e in queues[0]["entries"]] == [task]


def test_stop_running_task_sets_stopping_when_worker_alive(shared_server: EmbeddedServer) -> None:
    task = _new(shared_server)
    api_call(shared_server, "workers.register", {"worker": "stop-w", "queues": []})
    api_call(shared_server, "tasks.started", {"task": task, "force": True})
    api_call(shared_server, "workers.status_report", {"worker": "stop-w", "task": task})
    api_call(shared_server, "tasks.stop", {"task": task})
    polled = api_call(
        shared_server,
        "tasks.get_all",
        {"id": [task], "only_fields": ["status", "status_message"]},
    )["tasks"]
    assert polled == [{"id": task, "status": "in_progress", "status_message": "stopping"}]
    api_call(shared_server, "tasks.stopped", {"task": task, "status_reason": "stopped by agent"})
    assert _task(shared_server, task)["status"] == "stopped"
    api_call(shared_server, "workers.unregister", {"worker": "stop-w"})


def test_stop_without_worker_stops_at_once(shared_server: EmbeddedServer) -> None:
    running = _new(shared_server)
    api_call(shared_server, "tasks.started", {"task": running})
    api_call(shared_server, "tasks.stop", {"task": running})
    assert _task(shared_server, running)["status"] == "stopped"
    queued = _new(shared_server)
    api_call(shared_server, "tasks.enqueue", {"task": queued})
    api_call(shared_server, "tasks.stop", {"task": queued})
    assert _task(shared_server, queued)["status"] == "stopped"
    default = api_call(shared_server, "queues.get_default")["id"]
    entries = api_call(shared_server, "queues.get_by_id", {"queue": default})["queue"]["entries"]
    assert queued not in [e["task"] for e in entries]


def test_workers_report_and_list(shared_server: EmbeddedServer) -> None:
    queue = _queue(shared_server, "wk-q")
    task = _new(shared_server)
    stats = {"cpu_usage": [10.0], "memory_used": 100}
    api_call(
        shared_server,
        "workers.status_report",
        {
            "worker": "auto-w",
            "task": task,
            "queue": queue,
            "queues": [queue],
            "machine_stats": stats,
        },
    )
    workers = {w["id"]: w for w in api_call(shared_server, "workers.get_all")["workers"]}
    worker = workers["auto-w"]
    assert worker["task"]["id"] == task
    assert worker["queues"] == [{"id": queue, "name": "wk-q"}]
    assert worker["machine_stats"] == stats
    doc = _task(shared_server, task)
    assert doc["last_worker"] == "auto-w"
    assert doc["last_worker_report"]
    api_call(shared_server, "workers.unregister", {"worker": "auto-w"})
    ids = [w["id"] for w in api_call(shared_server, "workers.get_all")["workers"]]
    assert "auto-w" not in ids


def test_get_all_filters_and_paging(shared_server: EmbeddedServer) -> None:
    project = api_call(shared_server, "projects.create", {"name": "filters/p"})["id"]
    ids = [
        _new(shared_server, f"filter-{i}", project=project, system_tags=["x"] if i % 2 else [])
        for i in range(5)
    ]
    api_call(shared_server, "tasks.started", {"task": ids[0]})

    def names(**body: Any) -> list[str]:
        tasks = api_call(shared_server, "tasks.get_all", {"project": [project], **body})["tasks"]
        return [t["name"] for t in tasks]

    assert names() == [f"filter-{i}" for i in range(5)]
    assert names(name="^filter-[12]$") == ["filter-1", "filter-2"]
    assert names(status=["in_progress"]) == ["filter-0"]
    assert names(system_tags=["x"]) == ["filter-1", "filter-3"]
    assert names(system_tags=["-x"]) == ["filter-0", "filter-2", "filter-4"]
    assert names(order_by=["-name"], page=0, page_size=2) == ["filter-4", "filter-3"]
    assert names(order_by=["-name"], page=2, page_size=2) == ["filter-0"]
    only = api_call(shared_server, "tasks.get_all", {"id": [ids[0]], "only_fields": ["script.x"]})
    assert only["tasks"] == [{"id": ids[0], "script": {}}]  # the parent object is kept
    projects = api_call(shared_server, "projects.get_all", {"name": "^filters"})["projects"]
    assert sorted(p["name"] for p in projects) == ["filters", "filters/p"]


def test_task_log_paging_latest_first(shared_server: EmbeddedServer) -> None:
    task = _new(shared_server)
    lines = [
        json.dumps({"task": task, "type": "log", "msg": f"line {i}", "timestamp": 1000 + i})
        for i in range(10)
    ]
    response = api_raw(
        shared_server,
        "events.add_batch",
        content="\n".join(lines),
        headers={"Content-Type": "application/json-lines"},
    )
    assert response.json()["data"]["added"] == 10

    def page(**body: Any) -> dict[str, Any]:
        result: dict[str, Any] = api_call(
            shared_server, "events.get_task_log", {"task": task, "batch_size": 4, **body}
        )
        return result

    latest = page(navigate_earlier=True, order="asc")
    assert [e["msg"] for e in latest["events"]] == [f"line {i}" for i in (6, 7, 8, 9)]
    assert (latest["returned"], latest["total"]) == (4, 10)
    earlier = page(navigate_earlier=True, order="asc", from_timestamp=1006)
    assert [e["msg"] for e in earlier["events"]] == [f"line {i}" for i in (2, 3, 4, 5)]
    first = page(navigate_earlier=False)
    assert [e["msg"] for e in first["events"]] == [f"line {i}" for i in (0, 1, 2, 3)]


def test_scalars_reads(shared_server: EmbeddedServer) -> None:
    task = _new(shared_server)
    events = [
        {
            "task": task,
            "type": "training_stats_scalar",
            "metric": "loss",
            "variant": v,
            "iter": i,
            "value": float(i),
            "timestamp": 1000 + i,
        }
        for v in ("train", "val")
        for i in range(3)
    ]
    api_call(shared_server, "events.add_batch", {"requests": events})
    metrics = api_call(shared_server, "events.get_scalar_metrics_and_variants", {"task": task})
    assert metrics["metrics"] == {"loss": {"train": {"name": "train"}, "val": {"name": "val"}}}
    hist = api_call(shared_server, "events.scalar_metrics_iter_histogram", {"task": task})
    assert hist["loss"]["val"] == {"name": "val", "x": [0, 1, 2], "y": [0.0, 1.0, 2.0]}
    first = api_call(
        shared_server,
        "events.get_task_events",
        {"task": task, "event_type": "training_stats_scalar", "batch_size": 4},
    )
    assert (first["returned"], first["total"]) == (4, 6)
    rest = api_call(
        shared_server,
        "events.get_task_events",
        {"task": task, "batch_size": 4, "scroll_id": first["scroll_id"]},
    )
    assert rest["returned"] == 2
    doc = _task(shared_server, task)
    assert doc["last_iteration"] == 2
    [variants] = doc["last_metrics"].values()
    assert {v["variant"]: v["max_value"] for v in variants.values()} == {"train": 2.0, "val": 2.0}


def test_clone_copies_and_overrides(shared_server: EmbeddedServer) -> None:
    source = _new(
        shared_server,
        "src",
        script={"repository": "r", "entry_point": "a.py"},
        execution={"queue": "q"},
        hyperparams={"Args": {}},
    )
    clone = api_call(
        shared_server,
        "tasks.clone",
        {"task": source, "new_task_name": "copy", "execution_overrides": {"docker_cmd": "img"}},
    )["id"]
    doc = _task(shared_server, clone)
    assert (doc["name"], doc["parent"], doc["status"]) == ("copy", source, "created")
    assert doc["script"]["entry_point"] == "a.py"
    assert doc["execution"] == {"artifacts": [], "docker_cmd": "img"}
    assert doc["hyperparams"] == {"Args": {}}


@pytest.mark.parametrize("kind", ["input", "output"])
def test_models_on_tasks(shared_server: EmbeddedServer, kind: str) -> None:
    task = _new(shared_server)
    model = api_call(shared_server, "models.create", {"name": "m", "uri": "file:///w.bin"})["id"]
    body = {"task": task, "name": "m", "model": model, "type": kind}
    api_call(shared_server, "tasks.add_or_update_model", body)
    api_call(shared_server, "tasks.add_or_update_model", body)  # idempotent by name
    assert _task(shared_server, task)["models"][kind] == [{"name": "m", "model": model}]
    found = api_call(shared_server, "models.get_all", {"uri": ["file:///w.bin"]})["models"]
    assert model in [m["id"] for m in found]
    api_call(shared_server, "models.set_ready", {"model": model})
    assert api_call(shared_server, "models.get_by_id", {"model": model})["model"]["ready"] is True


def test_started_takes_last_worker_only_from_a_registered_worker(
    shared_server: EmbeddedServer,
) -> None:
    """clearml-agent's task process sends its hostname as X-ClearML-Worker: the worker id its
    daemon reported stays the task's last_worker (the watchdog relies on it)."""
    queue = _queue(shared_server, "lw-q")
    task, other = _new(shared_server), _new(shared_server)
    report = {"worker": "box:gpu0", "task": task, "queue": queue, "queues": [queue]}
    api_call(shared_server, "workers.status_report", report)
    hostname_only = {"X-ClearML-Worker": "box"}
    response = api_raw(shared_server, "tasks.started", {"task": task}, headers=hostname_only)
    assert response.status_code == 200
    assert _task(shared_server, task)["last_worker"] == "box:gpu0"
    registered = {"X-ClearML-Worker": "box:gpu0"}
    response = api_raw(shared_server, "tasks.started", {"task": other}, headers=registered)
    assert response.status_code == 200
    assert _task(shared_server, other)["last_worker"] == "box:gpu0"
    api_call(shared_server, "workers.unregister", {"worker": "box:gpu0"})
