"""projects.*: named containers of tasks; "a/b" names create their parents."""

from __future__ import annotations

import sqlite3
from typing import Any

from agent.server.accepts import accepts
from agent.server.documents import project_fields
from agent.server.errors import INVALID_PROJECT_ID, PROJECT_EXISTS, ApiError, bad_request
from agent.server.fields import opt_bool, opt_str, opt_str_list, req_str
from agent.server.listing import ListSpec, keep, order_and_page, parse_query
from agent.server.registry import Call, endpoint
from agent.server.state import COMPANY_ID
from agent.server.store import dumps, loads, new_id, now_iso

_EDITABLE_STR = ("description", "default_output_destination")
_PROJECT_FIELDS = "name description default_output_destination tags system_tags"
_REGEX_META = frozenset(".^$*+?{}[]|()")
# Presentation only: they add statistics to each project, never change which are returned.
_STATS_FLAGS = frozenset(
    {"include_stats", "stats_for_state", "stats_with_children", "check_own_contents"}
)
_SPECS = {
    name: ListSpec(
        name,
        handled=frozenset({"shallow_search", "include_hidden"}),
        ignored=_STATS_FLAGS if name.endswith("_ex") else frozenset(),
        field_filters=True,
        text_fields=("id", "name", "description"),
    )
    for name in ("projects.get_all", "projects.get_all_ex")
}


def find_project(conn: sqlite3.Connection, project_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT doc FROM projects WHERE id=?", (project_id,)).fetchone()
    return None if row is None else dict(loads(row[0]))


def load_project(conn: sqlite3.Connection, project_id: str) -> dict[str, Any]:
    project = find_project(conn, project_id)
    if project is None:
        raise bad_request(f"invalid project id: no project {project_id!r}", INVALID_PROJECT_ID)
    return project


def _insert(conn: sqlite3.Connection, name: str, user: str, fields: dict[str, Any]) -> str:
    stamp = now_iso()
    doc = {
        "id": new_id(),
        "name": name,
        "basename": name.rsplit("/", 1)[-1],
        "description": "",
        "user": user,
        "company": COMPANY_ID,
        "created": stamp,
        "last_update": stamp,
        "tags": [],
        "system_tags": [],
        "default_output_destination": "",
        **fields,
    }
    conn.execute(
        "INSERT INTO projects (id, name, created, doc) VALUES (?, ?, ?, ?)",
        (doc["id"], name, stamp, dumps(doc)),
    )
    return str(doc["id"])


def create_project(conn: sqlite3.Connection, name: str, user: str, fields: dict[str, Any]) -> str:
    """Create ``name`` (and any missing parents of an "a/b/c" path); 400 if it exists."""
    parts = [p.strip() for p in name.split("/")]
    if any(not p for p in parts):
        raise bad_request(f"invalid project name {name!r}: empty path component")
    if conn.execute("SELECT 1 FROM projects WHERE name=?", (name,)).fetchone():
        raise ApiError(400, PROJECT_EXISTS, f"a project named {name!r} already exists")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if not conn.execute("SELECT 1 FROM projects WHERE name=?", (parent,)).fetchone():
            _insert(conn, parent, user, {})
    return _insert(conn, "/".join(parts), user, fields)


def _fields(call: Call) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _EDITABLE_STR:
        if call.body.get(key) is not None:
            out[key] = opt_str(call.body, key)
    for key in ("tags", "system_tags"):
        value = opt_str_list(call.body, key)
        if value is not None:
            out[key] = value
    return out


@endpoint("projects.create", accepts=accepts(_PROJECT_FIELDS))
def create(call: Call) -> dict[str, Any]:
    name = req_str(call.body, "name")
    fields = _fields(call)
    with call.store.write() as conn:
        return {"id": create_project(conn, name, call.user, fields)}


def exact_name(pattern: str) -> bool:
    """Whether a name regex matches one literal name only (``^`` + escaped text + ``$``, as
    the SDK's ``exact_match_regex`` writes it)."""
    if len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$":
        return False
    inner, index = pattern[1:-1], 0
    while index < len(inner):
        char = inner[index]
        if char == "\\":
            if index + 1 >= len(inner) or inner[index + 1].isalnum():
                return False
            index += 2
            continue
        if char in _REGEX_META:
            return False
        index += 1
    return True


@endpoint("projects.get_all", "projects.get_all_ex")
def get_all(call: Call) -> dict[str, Any]:
    """Hidden projects (``.datasets``, ``.pipelines``) are found by id, by an exact name, or
    with ``search_hidden`` / ``include_hidden``; ``shallow_search`` keeps top-level ones."""
    query = parse_query(call.body, _SPECS[call.endpoint])
    show_hidden = opt_bool(call.body, "include_hidden") or bool(
        query.name and exact_name(query.name)
    )
    shallow = opt_bool(call.body, "shallow_search")
    sql, args = "SELECT doc FROM projects WHERE 1=1", []
    if query.name:
        sql += " AND name REGEXP ?"
        args.append(query.name)
    if query.ids:
        sql += f" AND id IN ({','.join('?' * len(query.ids))})"
        args.extend(query.ids)
    rows = call.store.conn().execute(sql + " ORDER BY created", args).fetchall()
    docs = [d for d in (loads(r[0]) for r in rows) if keep(d, query, show_hidden)]
    if shallow:
        docs = [d for d in docs if "/" not in str(d.get("name", ""))]
    docs = order_and_page(docs, query)
    return {"projects": [project_fields(d, query.only_fields) for d in docs]}


@endpoint("projects.get_by_id")
def get_by_id(call: Call) -> dict[str, Any]:
    project_id = req_str(call.body, "project")
    return {"project": load_project(call.store.conn(), project_id)}


@endpoint("projects.update", accepts=accepts(f"project {_PROJECT_FIELDS}"))
def update(call: Call) -> dict[str, Any]:
    project_id = req_str(call.body, "project")
    fields = _fields(call)
    new_name = opt_str(call.body, "name")
    with call.store.write() as conn:
        doc = load_project(conn, project_id)
        if new_name and new_name != doc["name"]:
            if conn.execute("SELECT 1 FROM projects WHERE name=?", (new_name,)).fetchone():
                raise ApiError(400, PROJECT_EXISTS, f"a project named {new_name!r} already exists")
            fields["name"] = new_name
            fields["basename"] = new_name.rsplit("/", 1)[-1]
        doc.update(fields, last_update=now_iso())
        conn.execute(
            "UPDATE projects SET name=?, doc=? WHERE id=?", (doc["name"], dumps(doc), project_id)
        )
    return {"updated": 1, "fields": fields}
