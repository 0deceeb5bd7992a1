"""The console tab's data: pages of a task's log, regex search, download, live tail.

Log events are numbered by their order (timestamp, then arrival); a page is a slice of that
order, so the browser loads only what it shows, whatever the log's length.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent.server.events import LOG
from agent.server.store import valid_regex

PAGE = 500
MAX_PAGE = 5_000
MAX_MATCHES = 500


def collapse(text: str) -> str:
    """A line as a terminal shows it: a carriage-return progress line (tqdm) becomes its
    last non-empty state."""
    lines = []
    for raw in text.split("\n"):
        states = [s for s in raw.split("\r") if s] if "\r" in raw else [raw]
        lines.append(states[-1] if states else "")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Counted:
    first_seq: int  # the log's first entry when counted (a reset or delete changes it)
    last_seq: int  # the newest event of any task when counted
    count: int


_counts: dict[str, _Counted] = {}
_counts_lock = threading.Lock()
_COUNTS_KEPT = 256


def total(conn: sqlite3.Connection, task_id: str) -> int:
    """The number of entries in a task's log. Counting a million entries costs ~0.2 s, so a
    count is kept and brought up to date with the entries stored since (a primary-key range);
    it is counted again if the log's first entry changed (the log was deleted or reset)."""
    first = conn.execute(
        "SELECT seq FROM events WHERE task=? AND type=? ORDER BY timestamp, seq LIMIT 1",
        (task_id, LOG),
    ).fetchone()
    first_seq = int(first[0]) if first else 0
    latest = latest_seq(conn)
    with _counts_lock:
        known = _counts.get(task_id)
    if known is not None and known.first_seq == first_seq and known.last_seq <= latest:
        added = conn.execute(
            "SELECT COUNT(*) FROM events NOT INDEXED WHERE seq > ? AND seq <= ? AND task=? "
            "AND type=?",
            (known.last_seq, latest, task_id, LOG),
        ).fetchone()[0]
        count = known.count + int(added)
    else:
        row = conn.execute(
            "SELECT COUNT(*) FROM events WHERE task=? AND type=? AND seq <= ?",
            (task_id, LOG, latest),
        ).fetchone()
        count = int(row[0])
    with _counts_lock:
        if len(_counts) >= _COUNTS_KEPT:
            _counts.clear()
        _counts[task_id] = _Counted(first_seq, latest, count)
    return count


def _entry(number: int, seq: int, stamp: int, msg: Any) -> dict[str, Any]:
    return {"n": number, "seq": seq, "ts": stamp, "text": collapse(str(msg or ""))}


def page(conn: sqlite3.Connection, task_id: str, offset: int | None, limit: int) -> dict[str, Any]:
    """Entries ``offset..offset+limit`` (None: the last ``limit``), with the log's total."""
    count = total(conn, task_id)
    limit = max(1, min(limit, MAX_PAGE))
    start = max(0, count - limit) if offset is None else max(0, min(offset, count))
    select = "SELECT seq, timestamp, json_extract(doc, '$.msg') FROM events WHERE task=? AND type=?"
    if start > count // 2:  # nearer the end: read backwards from it (the tail is one seek)
        rows = conn.execute(
            f"{select} ORDER BY timestamp DESC, seq DESC LIMIT ? OFFSET ?",
            (task_id, LOG, min(limit, count - start), count - start - min(limit, count - start)),
        ).fetchall()[::-1]
    else:
        rows = conn.execute(
            f"{select} ORDER BY timestamp, seq LIMIT ? OFFSET ?", (task_id, LOG, limit, start)
        ).fetchall()
    entries = [_entry(start + i, r[0], r[1], r[2]) for i, r in enumerate(rows)]
    return {"total": count, "offset": start, "entries": entries, "last_seq": latest_seq(conn)}


def latest_seq(conn: sqlite3.Connection) -> int:
    """The newest event's number, any task: the live tail starts after it (one seek)."""
    return int(conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0)


def search(
    conn: sqlite3.Connection, task_id: str, pattern: str, start: int = 0, budget: float = 1.0
) -> dict[str, Any]:
    """Entries from number ``start`` on whose text matches the regex ``pattern``: at most
    ``MAX_MATCHES``, and at most ``budget`` seconds of scanning, so a search of a huge log
    answers quickly; ``next`` is where a further search goes on (None: the log's end)."""
    if not valid_regex(pattern):
        raise ValueError(f"not a valid regular expression: {pattern!r}")
    compiled = re.compile(pattern)
    rows = conn.execute(
        "SELECT seq, timestamp, json_extract(doc, '$.msg') FROM events WHERE task=? AND type=? "
        "ORDER BY timestamp, seq LIMIT -1 OFFSET ?",
        (task_id, LOG, max(0, start)),
    )
    deadline = time.monotonic() + budget
    matches: list[dict[str, Any]] = []
    number = max(0, start)
    while batch := rows.fetchmany(2048):
        for seq, stamp, msg in batch:
            if msg and compiled.search(msg):
                matches.append(_entry(number, seq, stamp, msg))
            number += 1
            if len(matches) >= MAX_MATCHES:
                return {"pattern": pattern, "entries": matches, "next": number}
        if time.monotonic() > deadline:
            return {"pattern": pattern, "entries": matches, "next": number}
    return {"pattern": pattern, "entries": matches, "next": None}


def since(conn: sqlite3.Connection, task_id: str, after_seq: int) -> list[dict[str, Any]]:
    """Log entries stored after ``after_seq`` (the live tail), at most a page. A range of the
    primary key (only recent events of any task), not the task's index: a poll costs the
    same whether the log has ten lines or a million."""
    rows = conn.execute(
        "SELECT seq, timestamp, json_extract(doc, '$.msg') FROM events NOT INDEXED "
        "WHERE seq > ? AND task=? AND type=? ORDER BY seq LIMIT ?",
        (after_seq, task_id, LOG, MAX_PAGE),
    ).fetchall()
    return [_entry(-1, r[0], r[1], r[2]) for r in rows]


def download(conn: sqlite3.Connection, task_id: str) -> Iterator[bytes]:
    """The whole log as text, a few thousand entries per chunk."""
    rows = conn.execute(
        "SELECT json_extract(doc, '$.msg') FROM events WHERE task=? AND type=? "
        "ORDER BY timestamp, seq",
        (task_id, LOG),
    )
    while batch := rows.fetchmany(4096):
        yield "".join(f"{r[0] or ''}\n" for r in batch).encode()
