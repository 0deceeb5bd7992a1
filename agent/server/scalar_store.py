"""Scalar points kept compact for charts: per series, blocks of packed doubles beside the events.

``events`` keeps each scalar as a JSON document, and its index has no metric column, so one
series' points cost a read of every scalar event of the task. ``scalar_blocks`` (schema v3)
holds every series as blocks of ``BLOCK`` points, each block three blobs of little-endian
doubles (iteration, wall time in seconds, value) in arrival order, with the block's x range,
so a chart reads one series (or only the blocks its zoom overlaps) without parsing JSON. Every
block but a series' last holds exactly ``BLOCK`` points; ids only grow (AUTOINCREMENT), so the
id of a series' first block tells a series stored again (after a reset) from the one before.
``events.add_batch`` appends here in the same transaction as the events; deleting a task's
events deletes its blocks (``delete_task``).
"""

from __future__ import annotations

import sqlite3
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

BLOCK = 1024  # points per block: 24 KB of blobs, rewritten at most once per batch per series
SCALAR = "training_stats_scalar"

CREATE: tuple[str, ...] = (
    """CREATE TABLE scalar_blocks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task TEXT NOT NULL,
        metric TEXT NOT NULL,
        variant TEXT NOT NULL,
        block INTEGER NOT NULL,
        count INTEGER NOT NULL,
        iter_min REAL NOT NULL,
        iter_max REAL NOT NULL,
        time_min REAL NOT NULL,
        time_max REAL NOT NULL,
        iters BLOB NOT NULL,
        times BLOB NOT NULL,
        vals BLOB NOT NULL)""",
    "CREATE UNIQUE INDEX scalar_blocks_series ON scalar_blocks (task, metric, variant, block)",
)


def _pack(values: array[float]) -> bytes:
    if sys.byteorder == "big":
        values = array("d", values)
        values.byteswap()
    return values.tobytes()


def _unpack(blob: bytes) -> array[float]:
    values = array("d", blob)
    if sys.byteorder == "big":
        values.byteswap()
    return values


@dataclass
class _Block:
    """One block of one series, as read back for appending (or a new, empty one)."""

    number: int
    stored: bool
    iters: array[float] = field(default_factory=lambda: array("d"))
    times: array[float] = field(default_factory=lambda: array("d"))
    vals: array[float] = field(default_factory=lambda: array("d"))

    def row(self) -> tuple[Any, ...]:
        return (
            len(self.vals), min(self.iters), max(self.iters), min(self.times), max(self.times),
            _pack(self.iters), _pack(self.times), _pack(self.vals),
        )  # fmt: skip


def _last_block(conn: sqlite3.Connection, key: tuple[str, str, str]) -> _Block:
    row = conn.execute(
        "SELECT block, iters, times, vals FROM scalar_blocks "
        "WHERE task=? AND metric=? AND variant=? ORDER BY block DESC LIMIT 1",
        key,
    ).fetchone()
    if row is None:
        return _Block(0, stored=False)
    block = _Block(int(row[0]), True, _unpack(row[1]), _unpack(row[2]), _unpack(row[3]))
    return block if len(block.vals) < BLOCK else _Block(block.number + 1, stored=False)


def _write(conn: sqlite3.Connection, key: tuple[str, str, str], block: _Block) -> None:
    if block.stored:
        conn.execute(
            "UPDATE scalar_blocks SET count=?, iter_min=?, iter_max=?, time_min=?, time_max=?, "
            "iters=?, times=?, vals=? WHERE task=? AND metric=? AND variant=? AND block=?",
            (*block.row(), *key, block.number),
        )
    else:
        conn.execute(
            "INSERT INTO scalar_blocks (task, metric, variant, block, count, iter_min, "
            "iter_max, time_min, time_max, iters, times, vals) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, block.number, *block.row()),
        )


def _append_series(
    conn: sqlite3.Connection, key: tuple[str, str, str], points: Iterable[tuple[float, ...]]
) -> None:
    """Append (iteration, time in seconds, value) points to the series, filling its last
    block first; each block touched is written once."""
    block = _last_block(conn, key)
    for iteration, stamp, value in points:
        if len(block.vals) >= BLOCK:
            _write(conn, key, block)
            block = _Block(block.number + 1, stored=False)
        block.iters.append(iteration)
        block.times.append(stamp)
        block.vals.append(value)
    if block.vals:
        _write(conn, key, block)


def append(conn: sqlite3.Connection, events: Iterable[Mapping[str, Any]]) -> None:
    """Store the scalar events among ``events`` (already checked by ``events._check_event``)."""
    by_series: dict[tuple[str, str, str], list[tuple[float, ...]]] = {}
    for e in events:
        if e["type"] == SCALAR:
            key = (e["task"], e["metric"], e["variant"])
            point = (float(e.get("iter") or 0), e["timestamp"] / 1000.0, float(e["value"]))
            by_series.setdefault(key, []).append(point)
    for key, points in by_series.items():
        _append_series(conn, key, points)


def delete_task(conn: sqlite3.Connection, task_id: str) -> None:
    conn.execute("DELETE FROM scalar_blocks WHERE task=?", (task_id,))


def backfill(conn: sqlite3.Connection) -> None:
    """Schema v3: the blocks of every scalar event stored before it, in arrival order (one
    pass; a few series' points in memory at a time)."""
    rows = conn.execute(
        "SELECT task, metric, variant, COALESCE(iter, 0), timestamp, "
        "json_extract(doc, '$.value') FROM events WHERE type=? ORDER BY task, metric, variant, "
        "seq",
        (SCALAR,),
    )
    key: tuple[str, str, str] | None = None
    points: list[tuple[float, ...]] = []
    for task, metric, variant, iteration, stamp, value in rows:
        if (task, metric or "", variant or "") != key:
            if key is not None and points:
                _append_series(conn, key, points)
            key, points = (task, metric or "", variant or ""), []
        if value is not None:
            points.append((float(iteration), stamp / 1000.0, float(value)))
    if key is not None and points:
        _append_series(conn, key, points)


def variants(conn: sqlite3.Connection, task_id: str, metric: str) -> dict[str, int]:
    """{variant: number of points} of one metric of a task."""
    rows = conn.execute(
        "SELECT variant, SUM(count) FROM scalar_blocks WHERE task=? AND metric=? GROUP BY variant",
        (task_id, metric),
    )
    return {str(r[0]): int(r[1]) for r in rows}


def extent(conn: sqlite3.Connection, key: tuple[str, str, str]) -> tuple[int, int, int] | None:
    """(id of the first block, number of the last block, points in it), or None: two index
    seeks that tell whether a series changed."""
    first = conn.execute(
        "SELECT id FROM scalar_blocks WHERE task=? AND metric=? AND variant=? "
        "ORDER BY block LIMIT 1",
        key,
    ).fetchone()
    last = conn.execute(
        "SELECT block, count FROM scalar_blocks WHERE task=? AND metric=? AND variant=? "
        "ORDER BY block DESC LIMIT 1",
        key,
    ).fetchone()
    if first is None or last is None:
        return None
    return int(first[0]), int(last[0]), int(last[1])


def blobs(
    conn: sqlite3.Connection,
    key: tuple[str, str, str],
    axis: str,
    x0: float | None,
    x1: float | None,
    from_block: int = 0,
) -> Iterator[tuple[bytes, bytes]]:
    """(x blob, value blob) of each block (from ``from_block`` on) of the series whose x range
    meets [x0, x1]; x is the iteration, or the wall time in seconds when ``axis`` is ``time``."""
    column, low, high = ("times", "time_min", "time_max") if axis == "time" else _ITER
    sql = f"SELECT {column}, vals FROM scalar_blocks WHERE task=? AND metric=? AND variant=?"
    sql += " AND block >= ?"
    args: list[Any] = [*key, from_block]
    if x0 is not None:
        sql += f" AND {high} >= ?"
        args.append(x0)
    if x1 is not None:
        sql += f" AND {low} <= ?"
        args.append(x1)
    for x_blob, y_blob in conn.execute(sql + " ORDER BY block", args):
        yield bytes(x_blob), bytes(y_blob)


_ITER = ("iters", "iter_min", "iter_max")
