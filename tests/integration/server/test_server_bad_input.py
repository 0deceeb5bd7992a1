"""Bad input: every refusal is a 4xx envelope with a clear message, and nothing is half-stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.server import registry
from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, api_raw


def _refused(response: Any, code: int = 400, subcode: int | None = None) -> str:
    envelope = response.json()
    meta = envelope["meta"]
    assert response.status_code == code == meta["result_code"], meta
    if subcode is not None:
        assert meta["result_subcode"] == subcode, meta
    assert meta["result_msg"]
    return str(meta["result_msg"])


def _count(server: EmbeddedServer, sql: str) -> int:
    return int(server.state.store.conn().execute(sql).fetchone()[0])


def test_malformed_bodies(shared_server: EmbeddedServer) -> None:
    msg = _refused(api_raw(shared_server, "tasks.create", content=b'{"name": "x",'), 400, 10)
    assert "malformed JSON" in msg
    msg = _refused(api_raw(shared_server, "tasks.create", content=b'["name"]'), 400, 10)
    assert "JSON object" in msg
    _refused(api_raw(shared_server, "tasks.create", content=b"\xff\xfe"), 400, 10)
    lines = b'{"task": "t", "type": "log"}\n{broken'
    headers = {"Content-Type": "application/json-lines"}
    msg = _refused(api_raw(shared_server, "events.add_batch", content=lines, headers=headers))
    assert "line 2" in msg


def test_unknown_fields_of_a_write_are_refused(shared_server: EmbeddedServer) -> None:
    """Refuse, never ignore (test_server_write_fields.py covers every write endpoint); the
    SDK's ``method`` plumbing is not a field."""
    body = {"name": "x", "bogus": {"a": 1}, "method": "get"}
    msg = _refused(api_raw(shared_server, "tasks.create", body), 400, 12)
    assert "field 'bogus' is not supported by tasks.create" in msg
    task = api_call(shared_server, "tasks.create", {"name": "x", "method": "get"})
    doc = api_call(shared_server, "tasks.get_by_id", {"task": task["id"]})["task"]
    assert "method" not in doc


@pytest.mark.parametrize(
    ("endpoint", "body", "words"),
    [
        ("tasks.create", {"name": 5}, "'name' must be a string, got int"),
        ("tasks.create", {}, "'name' is required"),
        ("tasks.create", {"name": "x", "script": "train.py"}, "'script' must be an object"),
        ("tasks.create", {"name": "x", "type": "nonsense"}, "'type' must be one of"),
        ("tasks.create", {"name": "x", "tags": "a"}, "'tags' must be a list of strings"),
        ("tasks.create", {"name": "x", "container": {"image": 3}}, "'container.image'"),
        ("tasks.create", {"name": "x", "hyperparams": {"Args": {"lr": 1}}}, "hyperparams.Args.lr"),
        ("tasks.create", {"name": "x", "models": {"input": [{"name": 1}]}}, "models.input"),
        ("tasks.get_all", {"page_size": "many"}, "'page_size' must be an integer"),
        ("tasks.get_all", {"name": "("}, "not a valid regular expression"),
        ("tasks.get_all", {"only_fields": [1]}, "'only_fields' must be a list of strings"),
        ("tasks.enqueue", {"task": ["a"]}, "'task' must be a string, got list"),
        ("queues.get_next_task", {"queue": 12}, "'queue' must be a string"),
        ("queues.create", {"name": None}, "'name' is required"),
        ("workers.register", {"worker": "w", "timeout": "soon"}, "'timeout' must be a number"),
        ("events.get_task_log", {"task": "t", "batch_size": 0}, "'batch_size'"),
        ("tasks.started", {"task": "t", "force": "maybe"}, "'force' must be a boolean"),
    ],
)
def test_wrong_types_name_the_field(
    shared_server: EmbeddedServer, endpoint: str, body: dict[str, Any], words: str
) -> None:
    assert words in _refused(api_raw(shared_server, endpoint, body), 400)


@pytest.mark.parametrize(
    ("endpoint", "body", "subcode"),
    [
        ("tasks.get_by_id", {"task": "missing"}, 101),
        ("tasks.edit", {"task": "missing", "name": "y"}, 101),
        ("tasks.enqueue", {"task": "missing"}, 101),
        ("queues.get_by_id", {"queue": "missing"}, 701),
        ("queues.get_next_task", {"queue": "missing"}, 701),
        ("models.get_by_id", {"model": "missing"}, 201),
        ("projects.get_by_id", {"project": "missing"}, 401),
        ("tasks.create", {"name": "x", "project": "missing"}, 401),
    ],
)
def test_unknown_ids(
    shared_server: EmbeddedServer, endpoint: str, body: dict[str, Any], subcode: int
) -> None:
    assert "missing" in _refused(api_raw(shared_server, endpoint, body), 400, subcode)


def test_invalid_batch_stores_nothing(embedded_server: EmbeddedServer) -> None:
    task = api_call(embedded_server, "tasks.create", {"name": "t"})["id"]
    good = {"task": task, "type": "log", "msg": "fine", "timestamp": 1}
    lines = [good, good, {"task": task, "type": "training_stats_scalar", "value": "high"}]
    content = "\n".join(json.dumps(e) for e in lines)
    headers = {"Content-Type": "application/json-lines"}
    msg = _refused(api_raw(embedded_server, "events.add_batch", content=content, headers=headers))
    assert "event 2" in msg
    unknown_task = [good, {**good, "task": "ghost"}]
    content = "\n".join(json.dumps(e) for e in unknown_task)
    _refused(
        api_raw(embedded_server, "events.add_batch", content=content, headers=headers), 400, 101
    )
    assert _count(embedded_server, "SELECT COUNT(*) FROM events") == 0


def test_refused_create_and_enqueue_change_nothing(embedded_server: EmbeddedServer) -> None:
    before = _count(embedded_server, "SELECT COUNT(*) FROM tasks")
    _refused(api_raw(embedded_server, "tasks.create", {"name": "x", "project": "ghost"}), 400, 401)
    _refused(api_raw(embedded_server, "tasks.create", {"name": "x", "execution": []}))
    assert _count(embedded_server, "SELECT COUNT(*) FROM tasks") == before
    task = api_call(embedded_server, "tasks.create", {"name": "t"})["id"]
    _refused(api_raw(embedded_server, "tasks.enqueue", {"task": task, "queue": "ghost"}), 400, 701)
    doc = api_call(embedded_server, "tasks.get_by_id", {"task": task})["task"]
    assert doc["status"] == "created"
    assert "queue" not in doc["execution"]


def test_no_default_queue_is_707(embedded_server: EmbeddedServer) -> None:
    default = api_call(embedded_server, "queues.get_default")["id"]
    api_call(embedded_server, "queues.update", {"queue": default, "system_tags": []})
    _refused(api_raw(embedded_server, "queues.get_default", {}), 400, 707)
    task = api_call(embedded_server, "tasks.create", {"name": "t"})["id"]
    _refused(api_raw(embedded_server, "tasks.enqueue", {"task": task}), 400, 707)


_NASTY_BODIES: list[Any] = [
    {},
    {
        "task": 1,
        "tasks": "x",
        "queue": [],
        "name": {},
        "worker": 3,
        "model": False,
        "project": 1.5,
        "id": {"a": 1},
        "hyperparams": "x",
        "requirements": [],
        "artifacts": 5,
        "models": "m",
        "metadata": 7,
        "configuration": 1,
        "batch_size": "x",
        "page": "p",
        "only_fields": 1,
        "order_by": {},
        "force": "perhaps",
        "type": 9,
        "requests": "r",
    },
    {"task": "ghost", "queue": "ghost", "model": "ghost", "project": "ghost", "worker": "w"},
]


def test_no_endpoint_answers_5xx(shared_server: EmbeddedServer) -> None:
    """Every registered endpoint, fed empty, mistyped and dangling bodies, stays below 500."""
    project = api_call(shared_server, "projects.create", {"name": "nasty"})["id"]
    real = {
        "task": api_call(shared_server, "tasks.create", {"name": "nasty"})["id"],
        "queue": api_call(shared_server, "queues.create", {"name": "nasty"})["id"],
        "model": api_call(shared_server, "models.create", {"name": "nasty", "uri": "file:///m"})[
            "id"
        ],
        "project": project,
        "worker": "nasty-worker",
    }
    mistyped_with_real_ids = {**_NASTY_BODIES[1], **real}
    failures = []
    for name in registry.names():
        for body in [*_NASTY_BODIES, mistyped_with_real_ids]:
            response = api_raw(shared_server, name, body)
            envelope = response.json()
            if (
                response.status_code >= 500
                or envelope["meta"]["result_code"] != response.status_code
            ):
                failures.append((name, body, response.status_code, envelope["meta"]["result_msg"]))
    assert failures == []
