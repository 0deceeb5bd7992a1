"""Queue rows and their entries. Positions are integers ordered per queue; the head is the
smallest. Pushing to the back is max+1, to the front min-1, so both are one index seek.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from agent.server.errors import (
    INVALID_QUEUE_ID,
    NO_DEFAULT_QUEUE,
    QUEUE_EXISTS,
    ApiError,
    bad_request,
)
from agent.server.state import COMPANY_ID
from agent.server.store import dumps, loads, new_id, note_push, now_iso

DEFAULT_TAG = "default"


def _doc(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = loads(row[0])
    return doc


def find_queue(conn: sqlite3.Connection, queue_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT doc FROM queues WHERE id=?", (queue_id,)).fetchone()
    return None if row is None else _doc(row)


def load_queue(conn: sqlite3.Connection, queue_id: str) -> dict[str, Any]:
    """The queue document, or 400/701."""
    queue = find_queue(conn, queue_id)
    if queue is None:
        raise bad_request(f"invalid queue id: no queue {queue_id!r}", INVALID_QUEUE_ID)
    return queue


def find_by_name(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT doc FROM queues WHERE name=?", (name,)).fetchone()
    return None if row is None else _doc(row)


def default_queue(conn: sqlite3.Connection) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT doc FROM queues WHERE EXISTS (SELECT 1 FROM json_each(queues.doc, "
        "'$.system_tags') WHERE value=?) ORDER BY created LIMIT 1",
        (DEFAULT_TAG,),
    ).fetchone()
    return None if row is None else _doc(row)


def load_default(conn: sqlite3.Connection) -> dict[str, Any]:
    queue = default_queue(conn)
    if queue is None:
        raise bad_request(
            "no default queue: tag a queue with system tag 'default'", NO_DEFAULT_QUEUE
        )
    return queue


def resolve(conn: sqlite3.Connection, queue_id: str, queue_name: str) -> dict[str, Any]:
    """A queue by id, else by name, else the default queue."""
    if queue_id:
        return load_queue(conn, queue_id)
    if queue_name:
        queue = find_by_name(conn, queue_name)
        if queue is None:
            raise bad_request(f"invalid queue: no queue named {queue_name!r}", INVALID_QUEUE_ID)
        return queue
    return load_default(conn)


def create_queue(
    conn: sqlite3.Connection,
    name: str,
    user: str,
    tags: list[str] | None = None,
    system_tags: list[str] | None = None,
) -> dict[str, Any]:
    if find_by_name(conn, name) is not None:
        raise ApiError(400, QUEUE_EXISTS, f"a queue named {name!r} already exists")
    doc: dict[str, Any] = {
        "id": new_id(),
        "name": name,
        "display_name": name,
        "user": user,
        "company": COMPANY_ID,
        "created": now_iso(),
        "tags": tags or [],
        "system_tags": system_tags or [],
        "metadata": {},
    }
    conn.execute(
        "INSERT INTO queues (id, name, created, doc) VALUES (?, ?, ?, ?)",
        (doc["id"], name, doc["created"], dumps(doc)),
    )
    return doc


def save_queue(conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
    conn.execute("UPDATE queues SET name=?, doc=? WHERE id=?", (doc["name"], dumps(doc), doc["id"]))


def ensure_default(conn: sqlite3.Connection, user: str) -> dict[str, Any]:
    """The default queue, created (named "default") on first start."""
    queue = default_queue(conn)
    if queue is not None:
        return queue
    existing = find_by_name(conn, DEFAULT_TAG)
    if existing is not None:
        existing["system_tags"] = sorted({*existing.get("system_tags", []), DEFAULT_TAG})
        save_queue(conn, existing)
        return existing
    return create_queue(conn, DEFAULT_TAG, user, system_tags=[DEFAULT_TAG])


def entries(conn: sqlite3.Connection, queue_id: str) -> list[dict[str, str]]:
    rows = conn.execute(
        "SELECT task, added FROM queue_entries WHERE queue=? ORDER BY position", (queue_id,)
    ).fetchall()
    return [{"task": str(r[0]), "added": str(r[1])} for r in rows]


def with_entries(conn: sqlite3.Connection, doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "entries": entries(conn, doc["id"])}


def count(conn: sqlite3.Connection, queue_id: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM queue_entries WHERE queue=?", (queue_id,)).fetchone()
    return int(row[0])


def queue_of(conn: sqlite3.Connection, task_id: str) -> str | None:
    row = conn.execute("SELECT queue FROM queue_entries WHERE task=?", (task_id,)).fetchone()
    return None if row is None else str(row[0])


def push(conn: sqlite3.Connection, queue_id: str, task_id: str, front: bool = False) -> str:
    """Add the task at the back (or front) of the queue; returns the ``added`` stamp. The
    queue's long polls are woken when the transaction commits (``Store.on_push``)."""
    if front:
        row = conn.execute(
            "SELECT MIN(position) FROM queue_entries WHERE queue=?", (queue_id,)
        ).fetchone()
        position = 0 if row[0] is None else int(row[0]) - 1
    else:
        row = conn.execute(
            "SELECT MAX(position) FROM queue_entries WHERE queue=?", (queue_id,)
        ).fetchone()
        position = 0 if row[0] is None else int(row[0]) + 1
    added = now_iso()
    conn.execute(
        "INSERT INTO queue_entries (queue, position, task, added) VALUES (?, ?, ?, ?)",
        (queue_id, position, task_id, added),
    )
    note_push(conn, queue_id)
    return added


def remove(conn: sqlite3.Connection, task_id: str) -> str | None:
    """Take the task out of whatever queue holds it; returns that queue's id."""
    queue_id = queue_of(conn, task_id)
    if queue_id is not None:
        conn.execute("DELETE FROM queue_entries WHERE task=?", (task_id,))
    return queue_id


def pop(conn: sqlite3.Connection, queue_id: str) -> tuple[str, str] | None:
    """Atomically (inside the caller's write transaction) take the head: (task, added)."""
    row = conn.execute(
        "SELECT position, task, added FROM queue_entries WHERE queue=? ORDER BY position LIMIT 1",
        (queue_id,),
    ).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM queue_entries WHERE queue=? AND position=?", (queue_id, row[0]))
    return str(row[1]), str(row[2])


def reorder(conn: sqlite3.Connection, queue_id: str, task_id: str, offset: int) -> int:
    """Move the task ``offset`` places (negative: towards the head); returns its new index."""
    rows = conn.execute(
        "SELECT task, added FROM queue_entries WHERE queue=? ORDER BY position", (queue_id,)
    ).fetchall()
    tasks = [(str(r[0]), str(r[1])) for r in rows]
    index = next((i for i, (t, _) in enumerate(tasks) if t == task_id), None)
    if index is None:
        raise bad_request(f"task {task_id!r} is not in queue {queue_id!r}", INVALID_QUEUE_ID)
    item = tasks.pop(index)
    new_index = max(0, min(len(tasks), index + offset))
    tasks.insert(new_index, item)
    conn.execute("DELETE FROM queue_entries WHERE queue=?", (queue_id,))
    conn.executemany(
        "INSERT INTO queue_entries (queue, position, task, added) VALUES (?, ?, ?, ?)",
        [(queue_id, i, t, a) for i, (t, a) in enumerate(tasks)],
    )
    return new_index


def claim(conn: sqlite3.Connection, task_id: str, queue_id: str, worker: str) -> None:
    """``worker`` popped the task: until it starts it (or the task moves on), the task is the
    worker's, and goes back to the queue if the worker goes away."""
    conn.execute(
        "INSERT OR REPLACE INTO claims (task, queue, worker, popped) VALUES (?, ?, ?, ?)",
        (task_id, queue_id, worker, time.time()),
    )


def unclaim(conn: sqlite3.Connection, task_id: str) -> None:
    conn.execute("DELETE FROM claims WHERE task=?", (task_id,))


def claims_of(conn: sqlite3.Connection, worker: str) -> list[tuple[str, str]]:
    """``(task, queue)`` of each claim ``worker`` holds, and they are dropped."""
    rows = conn.execute("SELECT task, queue FROM claims WHERE worker=?", (worker,)).fetchall()
    conn.execute("DELETE FROM claims WHERE worker=?", (worker,))
    return [(str(r[0]), str(r[1])) for r in rows]
