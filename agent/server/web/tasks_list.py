"""The tasks list: filters, sort and keyset paging straight on the indexed ``tasks`` columns.

A page reads only its own rows (``LIMIT``, and a cursor of the last row's sort value and id
instead of an offset), so the 1,000th page costs what the first does, at any number of tasks.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from agent.server.lifecycle import ALL_STATUSES

PAGE_SIZE = 50
SORTS = ("created", "last_update", "name", "status", "type")
_FIELDS = (
    "status_reason", "status_message", "last_worker", "started", "completed",
    "execution.queue", "tags",
)  # fmt: skip


@dataclass(frozen=True)
class ListFilter:
    project: str = ""
    status: str = ""
    queue: str = ""
    tag: str = ""
    name: str = ""
    sort: str = "created"
    descending: bool = True
    archived: bool = False
    after: str = ""  # the cursor: the last row of the previous page


def parse_filter(params: dict[str, str]) -> ListFilter:
    """The filter from query parameters; unknown sorts and statuses fall back to defaults."""
    sort = params.get("sort", "created").lstrip("-") or "created"
    return ListFilter(
        project=params.get("project", ""),
        status=params.get("status", "") if params.get("status") in ALL_STATUSES else "",
        queue=params.get("queue", ""),
        tag=params.get("tag", ""),
        name=params.get("name", "").strip(),
        sort=sort if sort in SORTS else "created",
        descending=params.get("order", "desc") != "asc",
        archived=params.get("archived", "") == "1",
        after=params.get("after", ""),
    )


def _cursor(value: Any, task_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, task_id]).encode()).decode()


def _uncursor(text: str) -> tuple[Any, str] | None:
    try:
        value, task_id = json.loads(base64.urlsafe_b64decode(text.encode()))
    except (ValueError, TypeError):
        return None
    return value, str(task_id)


def _where(flt: ListFilter) -> tuple[str, list[Any]]:
    sql, args = ["1=1"], []
    for column, value in (("project", flt.project), ("status", flt.status)):
        if value:
            sql.append(f"{column}=?")
            args.append(value)
    if flt.queue:
        sql.append("json_extract(doc, '$.execution.queue')=?")
        args.append(flt.queue)
    if flt.tag:
        # a substring test first (cheap), the exact element test only for rows that pass it
        sql.append(
            "instr(json_extract(doc, '$.tags'), json_quote(?)) > 0 "
            "AND EXISTS (SELECT 1 FROM json_each(doc, '$.tags') WHERE value=?)"
        )
        args.extend([flt.tag, flt.tag])
    if flt.name:
        sql.append("instr(lower(name), ?) > 0")
        args.append(flt.name.lower())
    if not flt.archived:
        sql.append(
            "((instr(json_extract(doc, '$.system_tags'), '\"archived\"') = 0 "
            "AND instr(json_extract(doc, '$.system_tags'), '\"hidden\"') = 0) "
            "OR NOT EXISTS (SELECT 1 FROM json_each(doc, '$.system_tags') "
            "WHERE value IN ('archived', 'hidden')))"
        )
    cursor = _uncursor(flt.after) if flt.after else None
    if cursor is not None:
        sql.append(f"({flt.sort}, id) {'<' if flt.descending else '>'} (?, ?)")
        args.extend(cursor)
    return " AND ".join(sql), args


def list_tasks(conn: sqlite3.Connection, flt: ListFilter) -> dict[str, Any]:
    """One page of tasks (dicts for the template) and the cursor of the next page, if any."""
    where, args = _where(flt)
    direction = "DESC" if flt.descending else "ASC"
    extracted = ", ".join(f"json_extract(doc, '$.{f}')" for f in _FIELDS)
    rows = conn.execute(
        f"SELECT id, name, project, status, type, created, last_update, {extracted} "
        f"FROM tasks WHERE {where} ORDER BY {flt.sort} {direction}, id {direction} LIMIT ?",
        [*args, PAGE_SIZE + 1],
    ).fetchall()
    tasks = [_row(r) for r in rows[:PAGE_SIZE]]
    more = len(rows) > PAGE_SIZE
    last = tasks[-1] if tasks and more else None
    return {"tasks": tasks, "next": _cursor(last[flt.sort], last["id"]) if last else ""}


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("id", "name", "project", "status", "type", "created", "last_update")
    item = dict(zip(keys, row[:7], strict=True))
    extra = dict(zip(_FIELDS, row[7:], strict=True))
    item.update(
        reason=extra["status_reason"] or "",
        message=extra["status_message"] or "",
        worker=extra["last_worker"] or "",
        started=extra["started"],
        completed=extra["completed"],
        queue=extra["execution.queue"] or "",
        tags=json.loads(extra["tags"]) if extra["tags"] else [],
    )
    return item


def names(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    """id → name of every project or queue (small tables)."""
    assert table in ("projects", "queues")
    return {str(r[0]): str(r[1]) for r in conn.execute(f"SELECT id, name FROM {table}")}
