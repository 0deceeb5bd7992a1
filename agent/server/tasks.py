"""tasks.*: create, read, edit, clone and delete task documents (status changes: task_status)."""

from __future__ import annotations

import copy
import sqlite3
from typing import Any

from agent.server import queue_ops, scalar_store
from agent.server.accepts import accepts
from agent.server.documents import (
    FREE_FIELDS,
    TASK_FIELDS,
    TASK_TYPES,
    apply_edit,
    check_fields,
    deep_merge,
    normalize_task,
    project_fields,
)
from agent.server.errors import INVALID_MODEL_ID, INVALID_TASK_STATUS, ApiError, bad_request
from agent.server.fields import opt_bool, opt_dict, opt_list, opt_str, opt_str_list, req_str
from agent.server.filters import parse_time_bounds
from agent.server.lifecycle import IMMUTABLE, IN_PROGRESS
from agent.server.listing import ListSpec, keep, order_and_page, parse_query
from agent.server.projects import create_project, load_project
from agent.server.registry import Call, endpoint
from agent.server.state import COMPANY_ID
from agent.server.store import loads, new_id, now_iso
from agent.server.taskstore import insert_task, load_task, save_task

# (request field, column): ``task_types`` is what the SDK's DatasetTrigger sends for ``type``.
_COLUMN_FILTERS = (("project", "project"), ("status", "status"), ("type", "type"))
_SDK_SLIPS = (("task_types", "type"),)
_SPECS = {
    name: ListSpec(
        name,
        handled=frozenset(
            {"project", "status", "type", "task_types", "pipeline_project"}
            | {"parent", "user", "status_changed"}
        ),
        text_fields=("id", "name", "comment"),
    )
    for name in ("tasks.get_all", "tasks.get_all_ex")
}
_DEVELOPMENT_TAG = "development"
_TASK_FIELDS = " ".join(sorted(TASK_FIELDS))
_CLONE_FIELDS = (
    "task new_task_name new_task_comment new_task_project new_task_parent new_task_tags "
    "new_task_system_tags new_task_hyperparams new_task_configuration new_task_container "
    "new_task_input_models execution_overrides new_project_name validate_references"
)
_NOT_DELETED = "this server deletes the task document and its events only"
# The SDK sends it (true) in every tasks.delete / tasks.reset; ClearML deletes the files only
# "if configured to do so", and this server is not: artifact files are kept.
_NOT_CONFIGURED = "delete_external_artifacts"


def _check_project(conn: sqlite3.Connection, fields: dict[str, Any]) -> None:
    if fields.get("project"):
        load_project(conn, fields["project"])


def new_task_doc(fields: dict[str, Any], user: str) -> dict[str, Any]:
    stamp = now_iso()
    doc = {
        "id": new_id(),
        "user": user,
        "company": COMPANY_ID,
        "type": "training",
        "status": "created",
        "created": stamp,
        "last_update": stamp,
        "last_change": stamp,
        "status_changed": stamp,
        **fields,
    }
    return normalize_task(doc)


@endpoint("tasks.create", inline=True, accepts=accepts(_TASK_FIELDS))
def create(call: Call) -> dict[str, Any]:
    name = req_str(call.body, "name")
    fields = check_fields(call.body)
    fields["name"] = name
    with call.store.write() as conn:
        _check_project(conn, fields)
        doc = new_task_doc(fields, call.user)
        insert_task(conn, doc)
    return {"id": doc["id"]}


@endpoint("tasks.get_by_id", inline=True)
def get_by_id(call: Call) -> dict[str, Any]:
    return {"task": load_task(call.store.conn(), req_str(call.body, "task"))}


def _project_ids(call: Call, names: list[str]) -> list[str]:
    """``pipeline_project`` (sent by the SDK's ``PipelineController.get``): project *names*,
    hidden ones included; one id (or a never-matching blank) per name."""
    conn = call.store.conn()
    found = []
    for name in names:
        row = conn.execute("SELECT id FROM projects WHERE name=?", (name,)).fetchone()
        found.append(str(row[0]) if row else "")
    return found


def _select_tasks(call: Call) -> list[dict[str, Any]]:
    body = call.body
    query = parse_query(body, _SPECS[call.endpoint])
    sql, args = "SELECT doc FROM tasks WHERE 1=1", []
    if query.ids is not None:
        if not query.ids:
            return []
        sql += f" AND id IN ({','.join('?' * len(query.ids))})"
        args.extend(query.ids)
    if query.name:
        sql += " AND name REGEXP ?"
        args.append(query.name)
    for key, column in (*_COLUMN_FILTERS, *_SDK_SLIPS):
        values = opt_str_list(body, key)
        if values:
            sql += f" AND {column} IN ({','.join('?' * len(values))})"
            args.extend(values)
    named = opt_str_list(body, "pipeline_project")
    if named is not None:
        sql += f" AND project IN ({','.join('?' * len(named))})"
        args.extend(_project_ids(call, named))
    parent = opt_str_list(body, "parent")
    users = opt_str_list(body, "user")
    changed = parse_time_bounds("status_changed", body.get("status_changed") or [])
    rows = call.store.conn().execute(sql + " ORDER BY created, id", args).fetchall()
    docs = [normalize_task(loads(r[0])) for r in rows]
    docs = [
        d
        for d in docs
        if keep(d, query)
        and (not parent or d.get("parent") in parent)
        and (not users or d.get("user") in users)
        and all(bound.holds(d.get("status_changed")) for bound in changed)
    ]
    docs = order_and_page(docs, query)
    return [project_fields(d, query.only_fields) for d in docs]


@endpoint("tasks.get_all", "tasks.get_all_ex")
def get_all(call: Call) -> dict[str, Any]:
    return {"tasks": _select_tasks(call)}


@endpoint("tasks.edit", inline=True, accepts=accepts(f"task force {_TASK_FIELDS}"))
def edit(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    force = opt_bool(call.body, "force")
    changes = check_fields(call.body)
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        restricted = set(changes) - FREE_FIELDS
        status = doc["status"]
        if restricted and (status in IMMUTABLE or (status != "created" and not force)):
            raise ApiError(
                400,
                INVALID_TASK_STATUS,
                f"invalid task status: cannot edit {', '.join(sorted(restricted))} of a "
                f"{status!r} task" + ("" if status in IMMUTABLE else " without force=true"),
            )
        _check_project(conn, changes)
        doc = apply_edit(doc, changes)
        save_task(conn, doc)
    return {"updated": 1, "fields": changes}


def _clone_fields(call: Call, source: dict[str, Any]) -> dict[str, Any]:
    body = call.body
    execution = copy.deepcopy(source["execution"])
    execution.pop("queue", None)
    execution["artifacts"] = [a for a in execution["artifacts"] if a.get("mode") == "input"]
    overrides = opt_dict(body, "execution_overrides")
    if overrides:
        execution = deep_merge(execution, overrides)
    system_tags = opt_str_list(body, "new_task_system_tags")
    if system_tags is None:
        system_tags = [t for t in source["system_tags"] if t not in (_DEVELOPMENT_TAG, "archived")]
    input_models = opt_list(body, "new_task_input_models")
    fields: dict[str, Any] = {
        "name": opt_str(body, "new_task_name") or source["name"],
        "comment": opt_str(body, "new_task_comment", source["comment"]),
        "type": source["type"] if source["type"] in TASK_TYPES else "training",
        "project": opt_str(body, "new_task_project") or source.get("project"),
        "parent": opt_str(body, "new_task_parent") or source["id"],
        "tags": opt_str_list(body, "new_task_tags") or list(source["tags"]),
        "system_tags": system_tags,
        "script": copy.deepcopy(source["script"]),
        "execution": execution,
        "output": {k: v for k, v in source["output"].items() if k == "destination"},
        "hyperparams": opt_dict(body, "new_task_hyperparams") or source["hyperparams"],
        "configuration": opt_dict(body, "new_task_configuration") or source["configuration"],
        "container": opt_dict(body, "new_task_container") or source["container"],
        "models": {
            "input": input_models if input_models is not None else source["models"]["input"],
            "output": [],
        },
    }
    return check_fields(fields)


def _check_references(conn: sqlite3.Connection, fields: dict[str, Any]) -> None:
    """``validate_references``: the clone's parent task and input models must exist."""
    load_task(conn, fields["parent"])
    for item in fields["models"]["input"]:
        found = conn.execute("SELECT 1 FROM models WHERE id=?", (item["model"],)).fetchone()
        if found is None:
            raise bad_request(
                f"invalid model id: input model {item['name']!r} is no model ({item['model']!r})",
                INVALID_MODEL_ID,
            )


@endpoint("tasks.clone", accepts=accepts(_CLONE_FIELDS))
def clone(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    new_project_name = opt_str(call.body, "new_project_name")
    with call.store.write() as conn:
        source = load_task(conn, task_id)
        fields = _clone_fields(call, source)
        if opt_bool(call.body, "validate_references"):
            _check_references(conn, fields)
        out: dict[str, Any] = {}
        if new_project_name:
            row = conn.execute("SELECT id FROM projects WHERE name=?", (new_project_name,))
            found = row.fetchone()
            project_id = (
                found[0] if found else create_project(conn, new_project_name, call.user, {})
            )
            fields["project"] = project_id
            out["new_project"] = {"id": project_id, "name": new_project_name}
        _check_project(conn, fields)
        doc = new_task_doc(fields, call.user)
        insert_task(conn, doc)
    return {"id": doc["id"], **out}


@endpoint(
    "tasks.delete",
    accepts=accepts(
        "task force",
        ignored=f"return_file_urls status_reason status_message {_NOT_CONFIGURED}",
        off_only={
            "delete_output_models": f"{_NOT_DELETED} (models.delete deletes a model)",
            "move_to_trash": "there is no trash: a deleted task is gone",
        },
    ),
)
def delete(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    force = opt_bool(call.body, "force")
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        if doc["status"] == IN_PROGRESS and not force:
            raise ApiError(
                400, INVALID_TASK_STATUS, "cannot delete a task in progress without force=true"
            )
        queue_ops.remove(conn, task_id)
        events = conn.execute("DELETE FROM events WHERE task=?", (task_id,)).rowcount
        scalar_store.delete_task(conn, task_id)
        conn.execute("DELETE FROM tasks WHERE id=?", (task_id,))
    return {"deleted": True, "events": {"deleted": events}, "updated_children": 0}


@endpoint("tasks.set_requirements", inline=True, accepts=accepts("task requirements"))
def set_requirements(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    requirements = opt_dict(call.body, "requirements")
    if requirements is None:
        raise bad_request("field 'requirements' is required")
    for key, value in requirements.items():
        if value is not None and not isinstance(value, str | list):
            raise bad_request(f"field 'requirements.{key}' must be a string")
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        doc["script"] = {**doc["script"], "requirements": requirements}
        save_task(conn, doc)
    return {"updated": 1, "fields": {"script.requirements": requirements}}


@endpoint("tasks.ping", inline=True, accepts=accepts("task"))
def ping(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    with call.store.write() as conn:
        save_task(conn, load_task(conn, task_id))
    return {}


@endpoint("tasks.get_types")
def get_types(call: Call) -> dict[str, Any]:
    rows = call.store.conn().execute("SELECT DISTINCT type FROM tasks ORDER BY type").fetchall()
    return {"types": [r[0] for r in rows]}
