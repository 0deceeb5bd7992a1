"""Write endpoints refuse the fields they do not understand, and write nothing then.

An unknown field is 400/12 naming it and the endpoint, no row changes, and the same body
without it is taken (docs/clearml-compat.md)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.server import registry
from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, api_raw

BOGUS = "conveyor_bogus"
_names = itertools.count()
Ids = dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    db: Path = tmp_path_factory.mktemp("write-fields") / "server.db"
    with EmbeddedServer(db) as live:
        yield live


def _unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def _task(server: EmbeddedServer, *steps: tuple[str, dict[str, Any]]) -> str:
    task = str(api_call(server, "tasks.create", {"name": _unique("t")})["id"])
    for endpoint, body in steps:
        api_call(server, endpoint, {"task": task, **body})
    return task


def _objects(server: EmbeddedServer) -> Ids:
    """Fresh objects for one case: a draft, a running, a queued and a completed task, a
    project, queues, a model and a worker."""
    queue = str(api_call(server, "queues.create", {"name": _unique("q")})["id"])
    empty = str(api_call(server, "queues.create", {"name": _unique("e")})["id"])
    worker = _unique("w")
    api_call(server, "workers.register", {"worker": worker, "queues": [queue]})
    draft = _task(server)
    running = _task(server, ("tasks.started", {}), ("events.add", {"type": "log", "msg": "."}))
    completed = _task(server, ("tasks.started", {}), ("tasks.completed", {}))
    queued, behind = [_task(server, ("tasks.enqueue", {"queue": queue})) for _ in range(2)]
    model = api_call(server, "models.create", {"name": "m", "uri": "file:///m.bin"})["id"]
    project = api_call(server, "projects.create", {"name": _unique("p")})["id"]
    tasks = {"T": draft, "R": running, "C": completed, "Q": queued, "Q2": behind}
    return {
        **tasks, "queue": queue, "empty": empty, "worker": worker, "model": str(model),
        "project": str(project),
    }  # fmt: skip


Body = Callable[[Ids], dict[str, Any]]
HP = [{"section": "Args", "name": "lr", "value": "0.1"}]
CASES: dict[str, Body] = {
    "tasks.create": lambda i: {"name": "n", "type": "training"},
    "tasks.edit": lambda i: {"task": i["T"], "comment": "c"},
    "tasks.clone": lambda i: {"task": i["T"]},
    "tasks.enqueue": lambda i: {"task": i["T"], "queue": i["queue"]},
    "tasks.dequeue": lambda i: {"task": i["Q"]},
    "tasks.started": lambda i: {"task": i["T"]},
    "tasks.stop": lambda i: {"task": i["R"]},
    "tasks.stopped": lambda i: {"task": i["R"]},
    "tasks.failed": lambda i: {"task": i["R"]},
    "tasks.completed": lambda i: {"task": i["R"]},
    "tasks.publish": lambda i: {"task": i["C"]},
    "tasks.close": lambda i: {"task": i["C"]},
    "tasks.reset": lambda i: {"task": i["C"], "force": True},
    "tasks.delete": lambda i: {"task": i["T"]},
    "tasks.edit_hyper_params": lambda i: {"task": i["T"], "hyperparams": HP},
    "tasks.delete_hyper_params": lambda i: {"task": i["T"], "hyperparams": [{"section": "A"}]},
    "tasks.edit_configuration": lambda i: {
        "task": i["T"],
        "configuration": [{"name": "c", "value": "v"}],
    },
    "tasks.set_requirements": lambda i: {"task": i["T"], "requirements": {"pip": "x"}},
    "tasks.ping": lambda i: {"task": i["R"]},
    "tasks.add_or_update_model": lambda i: {
        "task": i["T"],
        "name": "in",
        "model": i["model"],
        "type": "input",
    },
    "tasks.delete_models": lambda i: {"task": i["T"], "models": [{"name": "in", "type": "input"}]},
    "tasks.add_or_update_artifacts": lambda i: {
        "task": i["T"],
        "artifacts": [{"key": "a", "type": "str"}],
    },
    "tasks.delete_artifacts": lambda i: {"task": i["T"], "artifacts": [{"key": "a"}]},
    "models.create": lambda i: {"name": "m2", "uri": "file:///m2.bin"},
    "models.edit": lambda i: {"model": i["model"], "comment": "c"},
    "models.update": lambda i: {"model": i["model"], "comment": "c"},
    "models.update_for_task": lambda i: {"task": i["T"], "uri": "file:///out.bin"},
    "models.set_ready": lambda i: {"model": i["model"]},
    "models.add_or_update_metadata": lambda i: {
        "model": i["model"],
        "metadata": [{"key": "k", "type": "str", "value": "v"}],
    },
    "models.delete": lambda i: {"model": i["model"]},
    "projects.create": lambda i: {"name": _unique("np")},
    "projects.update": lambda i: {"project": i["project"], "description": "d"},
    "queues.create": lambda i: {"name": _unique("nq")},
    "queues.update": lambda i: {"queue": i["queue"], "tags": ["t"]},
    "queues.delete": lambda i: {"queue": i["empty"]},
    "queues.remove_task": lambda i: {"queue": i["queue"], "task": i["Q"]},
    "queues.move_task_to_front": lambda i: {"queue": i["queue"], "task": i["Q2"]},
    "queues.move_task_to_back": lambda i: {"queue": i["queue"], "task": i["Q"]},
    "queues.move_task_forward": lambda i: {"queue": i["queue"], "task": i["Q2"], "count": 1},
    "queues.move_task_backward": lambda i: {"queue": i["queue"], "task": i["Q"], "count": 1},
    "workers.register": lambda i: {"worker": _unique("nw"), "queues": [i["queue"]]},
    "workers.status_report": lambda i: {"worker": i["worker"], "task": i["R"], "timestamp": 1},
    "workers.unregister": lambda i: {"worker": i["worker"]},
    "events.delete_for_task": lambda i: {"task": i["R"]},
    "events.add": lambda i: {"task": i["R"], "type": "log", "msg": "x", "level": "info"},
    "events.add_batch": lambda i: {
        "requests": [{"task": i["R"], "type": "training_stats_scalar", "value": 1.0}],
    },
}


def snapshot(server: EmbeddedServer) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row, table by table: what "nothing was written" compares."""
    conn = server.state.store.conn()
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: sorted(map(tuple, conn.execute(f"SELECT * FROM {t}")), key=repr) for t in tables}


def refused(server: EmbeddedServer, endpoint: str, body: Any, **kwargs: Any) -> str:
    response = api_raw(server, endpoint, body, **kwargs)
    meta = response.json()["meta"]
    assert (response.status_code, meta["result_subcode"]) == (400, 12), meta
    return str(meta["result_msg"])


def test_every_write_endpoint_has_a_case() -> None:
    declared = {name for name, e in registry.endpoints().items() if e.accepts is not None}
    assert declared <= set(CASES), sorted(declared - set(CASES))


@pytest.mark.parametrize("endpoint", sorted(CASES))
def test_an_unknown_field_is_refused_and_nothing_written(
    server: EmbeddedServer, endpoint: str
) -> None:
    ids = _objects(server)
    body = CASES[endpoint](ids)
    before = snapshot(server)
    msg = refused(server, endpoint, {**body, BOGUS: {"a": 1}})
    assert f"'{BOGUS}'" in msg and endpoint in msg, msg
    assert snapshot(server) == before
    api_call(server, endpoint, body)  # the same body without it is taken
    assert snapshot(server) != before


def test_an_unknown_field_of_one_event_refuses_the_batch(server: EmbeddedServer) -> None:
    task = _task(server, ("tasks.started", {}))
    good = {"task": task, "type": "log", "msg": "kept?", "timestamp": 1}
    bad = {"task": task, "type": "training_debug_image", "url": "x", BOGUS: 1}
    before = snapshot(server)
    msg = refused(server, "events.add_batch", {"requests": [good, bad]})
    assert f"'{BOGUS}'" in msg and "training_debug_image event 1" in msg, msg
    lines = f'{{"task": "{task}", "type": "log", "{BOGUS}": 2}}'
    headers = {"Content-Type": "application/json-lines"}
    refused(server, "events.add_batch", None, content=lines, headers=headers)
    msg = refused(server, "events.add", {"task": task, "type": "console", "msg": "x"})
    assert "'type'" in msg and "'console' is not an event type" in msg, msg
    assert snapshot(server) == before


def test_flags_taken_only_switched_off(server: EmbeddedServer) -> None:
    ids = _objects(server)
    before = snapshot(server)
    msg = refused(server, "tasks.reset", {"task": ids["C"], "clear_all": True})
    assert "'clear_all' of tasks.reset: true is not supported" in msg, msg
    refused(server, "models.set_ready", {"model": ids["model"], "publish_task": True})
    event = {"task": ids["R"], "type": "log", "msg": "m"}
    msg = refused(server, "events.add", {**event, "model_event": True})
    assert "model events are not supported" in msg
    assert snapshot(server) == before
    # What the SDK sends: the flags switched off.
    api_call(server, "models.set_ready", {"model": ids["model"], "publish_task": False})
    api_call(server, "events.add", {**event, "model_event": False, "allow_locked": True})
    api_call(server, "tasks.reset", {"task": ids["C"], "force": True, "clear_all": False})
    stored = api_call(server, "events.get_task_log", {"task": ids["R"]})["events"]
    assert not any("model_event" in e or "allow_locked" in e for e in stored)


def test_ignored_fields_are_taken(server: EmbeddedServer) -> None:
    """clearml-agent's ``is_daemon`` and unregister ``queues``, the report ``timestamp``,
    ``verify_watched_queue``."""
    ids = _objects(server)
    report = {"worker": ids["worker"], "timestamp": 5, "is_daemon": True, "task": ids["R"]}
    api_call(server, "workers.status_report", report)
    body = {"task": ids["T"], "queue": ids["queue"], "verify_watched_queue": True}
    assert api_call(server, "tasks.enqueue", body)["queue_watched"] is True
    api_call(server, "workers.unregister", {"worker": ids["worker"], "queues": [ids["queue"]]})
    assert ids["worker"] not in {w["id"] for w in api_call(server, "workers.get_all")["workers"]}


def test_fields_implemented_for_the_rule(server: EmbeddedServer) -> None:
    """Fields the SDK may send that used to be dropped: now stored or honoured."""
    ids = _objects(server)
    task = api_call(server, "tasks.create", {"name": "i", "input": {"view": {}}})["id"]
    assert api_call(server, "tasks.get_by_id", {"task": task})["task"]["input"] == {"view": {}}
    out = api_call(server, "models.update_for_task", {"task": ids["R"], "uri": "u", "iteration": 7})
    model = api_call(server, "models.get_by_id", {"model": out["id"]})["model"]
    assert model["last_iteration"] == 7 and model["ready"] is False
    api_call(server, "tasks.completed", {"task": ids["R"]})
    api_call(server, "tasks.publish", {"task": ids["R"]})  # publishes its output model too
    assert api_call(server, "models.get_by_id", {"model": out["id"]})["model"]["ready"] is True
    kept = api_call(server, "models.update_for_task", {"task": ids["C"], "uri": "k"})["id"]
    api_call(server, "tasks.publish", {"task": ids["C"], "publish_model": False})
    assert api_call(server, "models.get_by_id", {"model": kept})["model"]["ready"] is False
    created = "2024-01-02T03:04:05+00:00"
    api_call(server, "models.update", {"model": ids["model"], "created": created, "ui_cache": {}})
    assert api_call(server, "models.get_by_id", {"model": ids["model"]})["model"]["created"] == (
        created
    )
    bad_input = {"task": ids["T"], "new_task_input_models": [{"name": "x", "model": "nope"}]}
    response = api_raw(server, "tasks.clone", {**bad_input, "validate_references": True})
    assert response.json()["meta"]["result_subcode"] == 201
    api_call(server, "tasks.clone", bad_input)  # not validated unless asked, as on ClearML
