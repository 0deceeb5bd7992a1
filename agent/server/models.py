"""models.*: model documents (a name, a URI to the weights, the task that made them)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from agent.server.accepts import accepts
from agent.server.documents import project_fields
from agent.server.errors import INVALID_MODEL_ID, bad_request
from agent.server.fields import (
    Body,
    opt_bool,
    opt_dict,
    opt_int,
    opt_list,
    opt_str,
    opt_str_list,
    req_str,
)
from agent.server.filters import parse_time_bounds
from agent.server.listing import ListSpec, keep, order_and_page, parse_query
from agent.server.registry import Call, endpoint
from agent.server.state import COMPANY_ID
from agent.server.store import dumps, loads, new_id, now_iso
from agent.server.taskstore import load_task, save_task

_STR_FIELDS = ("uri", "name", "comment", "framework", "project", "parent", "task")
_OBJ_FIELDS = ("design", "labels", "ui_cache")
_COLUMNS = ("uri", "task", "project")
# What ``_fields`` reads: every model endpoint that writes a model takes these.
_MODEL_FIELDS = " ".join((*_STR_FIELDS, *_OBJ_FIELDS, "tags system_tags ready metadata created"))
_NOT_PUBLIC = "models belong to this server's one company; there are no public ones"
_NO_TASK_PUBLISH = "publishing a model never publishes its task here (tasks.publish does)"
_SPECS = {
    name: ListSpec(
        name,
        handled=frozenset({*_COLUMNS, "ready", "framework", "user", "last_update"}),
        text_fields=("id", "name", "comment"),
    )
    for name in ("models.get_all", "models.get_all_ex")
}


def _fields(body: Body) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _STR_FIELDS:
        if body.get(key) is not None:
            out[key] = opt_str(body, key)
    for key in _OBJ_FIELDS:
        value = opt_dict(body, key)
        if value is not None:
            out[key] = value
    for key in ("tags", "system_tags"):
        tags = opt_str_list(body, key)
        if tags is not None:
            out[key] = tags
    if body.get("ready") is not None:
        out["ready"] = opt_bool(body, "ready")
    if body.get("created") is not None:  # models.update takes the creation time
        out["created"] = _timestamp(body, "created")
    metadata = _metadata(body)
    if metadata is not None:
        out["metadata"] = metadata
    return out


def _timestamp(body: Body, name: str) -> str:
    value = opt_str(body, name)
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise bad_request(f"field '{name}' must be an ISO 8601 date-time, got {value!r}") from exc
    return value


def _metadata(body: Body) -> dict[str, Any] | None:
    """Model metadata: a list of {key, type, value} (or the already keyed object)."""
    value = body.get("metadata")
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    items = opt_list(body, "metadata") or []
    if not all(isinstance(i, dict) and isinstance(i.get("key"), str) for i in items):
        raise bad_request("field 'metadata' must be a list of objects with a string 'key'")
    return {i["key"]: i for i in items}


def load_model(conn: sqlite3.Connection, model_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT doc FROM models WHERE id=?", (model_id,)).fetchone()
    if row is None:
        raise bad_request(f"invalid model id: no model {model_id!r}", INVALID_MODEL_ID)
    return dict(loads(row[0]))


def _save(conn: sqlite3.Connection, doc: dict[str, Any], insert: bool = False) -> None:
    doc["last_update"] = now_iso()
    values = (doc["name"], doc.get("project"), doc.get("task"), doc.get("uri"), dumps(doc))
    if insert:
        conn.execute(
            "INSERT INTO models (name, project, task, uri, doc, id, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*values, doc["id"], doc["created"]),
        )
    else:
        conn.execute(
            "UPDATE models SET name=?, project=?, task=?, uri=?, doc=?, created=? WHERE id=?",
            (*values, doc["created"], doc["id"]),
        )


def create_model(conn: sqlite3.Connection, fields: dict[str, Any], user: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": new_id(),
        "name": "",
        "uri": "",
        "comment": "",
        "framework": "",
        "user": user,
        "company": COMPANY_ID,
        "created": now_iso(),
        "ready": False,
        "tags": [],
        "system_tags": [],
        "design": {},
        "labels": {},
        "metadata": {},
        **fields,
    }
    _save(conn, doc, insert=True)
    return doc


@endpoint("models.create", accepts=accepts(_MODEL_FIELDS, off_only={"public": _NOT_PUBLIC}))
def create(call: Call) -> dict[str, Any]:
    fields = _fields(call.body)
    if not fields.get("name"):
        raise bad_request("field 'name' is required")
    with call.store.write() as conn:
        if fields.get("task"):
            load_task(conn, fields["task"])
        doc = create_model(conn, fields, call.user)
    return {"id": doc["id"], "created": True}


@endpoint("models.get_by_id")
def get_by_id(call: Call) -> dict[str, Any]:
    return {"model": load_model(call.store.conn(), req_str(call.body, "model"))}


@endpoint("models.get_all", "models.get_all_ex")
def get_all(call: Call) -> dict[str, Any]:
    query = parse_query(call.body, _SPECS[call.endpoint])
    sql, args = "SELECT doc FROM models WHERE 1=1", []
    if query.ids is not None:
        sql += f" AND id IN ({','.join('?' * len(query.ids))})"
        args.extend(query.ids)
    if query.name:
        sql += " AND name REGEXP ?"
        args.append(query.name)
    for column in _COLUMNS:
        values = opt_str_list(call.body, column)
        if values:
            sql += f" AND {column} IN ({','.join('?' * len(values))})"
            args.extend(values)
    rows = call.store.conn().execute(sql + " ORDER BY created", args).fetchall()
    docs = [d for d in (loads(r[0]) for r in rows) if keep(d, query)]
    if call.body.get("ready") is not None:
        ready = opt_bool(call.body, "ready")
        docs = [d for d in docs if bool(d.get("ready")) == ready]
    for key in ("framework", "user"):
        wanted = opt_str_list(call.body, key)
        if wanted:
            docs = [d for d in docs if d.get(key) in wanted]
    updated = parse_time_bounds("last_update", call.body.get("last_update") or [])
    docs = [d for d in docs if all(b.holds(d.get("last_update")) for b in updated)]
    docs = order_and_page(docs, query)
    return {"models": [project_fields(d, query.only_fields) for d in docs]}


@endpoint("models.edit", "models.update", accepts=accepts(f"model iteration {_MODEL_FIELDS}"))
def edit(call: Call) -> dict[str, Any]:
    model_id = req_str(call.body, "model")
    fields = _fields(call.body)
    iteration = opt_int(call.body, "iteration")
    with call.store.write() as conn:
        doc = load_model(conn, model_id)
        if fields.get("task"):
            load_task(conn, fields["task"])
        doc.update(fields)
        if iteration is not None:
            doc["last_iteration"] = iteration
        _save(conn, doc)
    return {"updated": 1, "fields": fields}


@endpoint(
    "models.set_ready",
    accepts=accepts(
        "model", off_only={"publish_task": _NO_TASK_PUBLISH, "force_publish_task": _NO_TASK_PUBLISH}
    ),
)
def set_ready(call: Call) -> dict[str, Any]:
    model_id = req_str(call.body, "model")
    with call.store.write() as conn:
        doc = load_model(conn, model_id)
        doc["ready"] = True
        _save(conn, doc)
    return {"updated": 1, "published_task": None}


@endpoint("models.add_or_update_metadata", accepts=accepts("model metadata replace_metadata"))
def add_or_update_metadata(call: Call) -> dict[str, Any]:
    model_id = req_str(call.body, "model")
    metadata = _metadata(call.body) or {}
    replace = opt_bool(call.body, "replace_metadata")
    with call.store.write() as conn:
        doc = load_model(conn, model_id)
        doc["metadata"] = metadata if replace else {**doc.get("metadata", {}), **metadata}
        _save(conn, doc)
    return {"updated": 1}


# ``force``: a model is deleted even when a task uses it (ClearML asks for force then).
@endpoint("models.delete", accepts=accepts("model force"))
def delete(call: Call) -> dict[str, Any]:
    model_id = req_str(call.body, "model")
    with call.store.write() as conn:
        doc = load_model(conn, model_id)
        conn.execute("DELETE FROM models WHERE id=?", (model_id,))
    return {"deleted": True, "url": doc.get("uri")}


@endpoint(
    "models.update_for_task",
    accepts=accepts(f"override_model_id iteration {_MODEL_FIELDS}"),
)
def update_for_task(call: Call) -> dict[str, Any]:
    """Create (or update) a task's output model and record it on the task."""
    task_id = req_str(call.body, "task")
    override = opt_str(call.body, "override_model_id")
    fields = {k: v for k, v in _fields(call.body).items() if k != "task"}
    iteration = opt_int(call.body, "iteration")
    if iteration is not None:
        fields["last_iteration"] = iteration
    if not override and not fields.get("uri"):
        raise bad_request("one of 'uri' or 'override_model_id' is required")
    with call.store.write() as conn:
        task = load_task(conn, task_id)
        if override:
            doc = load_model(conn, override)
            doc.update(fields, task=task_id)
            _save(conn, doc)
            created = False
        else:
            fields.setdefault("name", task["name"])
            doc = create_model(conn, {**fields, "task": task_id}, call.user)
            created = True
        outputs = [m for m in task["models"]["output"] if m.get("model") != doc["id"]]
        outputs.append({"name": doc["name"], "model": doc["id"]})
        task["models"] = {**task["models"], "output": outputs}
        save_task(conn, task)
    return {"id": doc["id"], "created": created, "updated": 0 if created else 1}


def publish_outputs(conn: sqlite3.Connection, task: dict[str, Any]) -> None:
    """Publish (``ready``) a task's output models, as publishing the task does on ClearML."""
    for item in task["models"]["output"]:
        row = conn.execute("SELECT doc FROM models WHERE id=?", (item.get("model"),)).fetchone()
        if row is not None:
            doc = dict(loads(row[0]))
            doc["ready"] = True
            _save(conn, doc)
