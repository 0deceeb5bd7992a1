"""Task rows: the JSON document plus the indexed columns copied from it."""

from __future__ import annotations

import sqlite3
from typing import Any

from agent.server.documents import normalize_task
from agent.server.errors import INVALID_TASK_ID, bad_request
from agent.server.store import dumps, loads, now_iso


def load_task(conn: sqlite3.Connection, task_id: str) -> dict[str, Any]:
    """The task document, or 400/101 if there is no such task."""
    row = conn.execute("SELECT doc FROM tasks WHERE id=?", (task_id,)).fetchone()
    if row is None:
        raise bad_request(f"invalid task id: no task {task_id!r}", INVALID_TASK_ID)
    return normalize_task(loads(row[0]))


def find_task(conn: sqlite3.Connection, task_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT doc FROM tasks WHERE id=?", (task_id,)).fetchone()
    return None if row is None else normalize_task(loads(row[0]))


def insert_task(conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO tasks (id, name, project, status, type, created, last_update, doc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            doc["id"],
            doc["name"],
            doc.get("project"),
            doc["status"],
            doc["type"],
            doc["created"],
            doc["last_update"],
            dumps(doc),
        ),
    )


def save_task(conn: sqlite3.Connection, doc: dict[str, Any], touch: bool = True) -> None:
    """Write the document back; ``touch`` refreshes last_update/last_change."""
    if touch:
        stamp = now_iso()
        doc["last_update"] = stamp
        doc["last_change"] = stamp
    conn.execute(
        "UPDATE tasks SET name=?, project=?, status=?, type=?, last_update=?, doc=? WHERE id=?",
        (
            doc["name"],
            doc.get("project"),
            doc["status"],
            doc["type"],
            doc["last_update"],
            dumps(doc),
            doc["id"],
        ),
    )


def set_status(
    doc: dict[str, Any], status: str, reason: str | None = None, message: str | None = None
) -> None:
    """Change status and its bookkeeping fields in the document (not yet saved)."""
    stamp = now_iso()
    if status != doc.get("status"):
        doc["status_changed"] = stamp
    doc["status"] = status
    doc["status_reason"] = reason or ""
    doc["status_message"] = message or ""
    if status == "in_progress" and not doc.get("started"):
        doc["started"] = stamp
    if status in ("completed", "failed", "stopped"):
        doc["completed"] = stamp
    if status == "published":
        doc["published"] = stamp


def get_requeues(conn: sqlite3.Connection, task_id: str) -> int:
    row = conn.execute("SELECT requeues FROM tasks WHERE id=?", (task_id,)).fetchone()
    return 0 if row is None else int(row[0])


def set_requeues(conn: sqlite3.Connection, task_id: str, count: int) -> None:
    conn.execute("UPDATE tasks SET requeues=? WHERE id=?", (count, task_id))
