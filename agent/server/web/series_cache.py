"""Every scalar point of recently charted tasks, in memory, kept up to date incrementally.

Finding one series' points means reading every scalar event of its task (the events index has
no metric column) and its JSON document. So the first chart request for a task reads them all
once, for every series; later requests (other metrics, zooms, a running task's new points) read
only the events stored since (a primary-key range). A reset or deleted log (its first event
changed) is read again. At most ``MAX_POINTS`` points are kept, least recently used task first.
"""

from __future__ import annotations

import sqlite3
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from agent.server.events import SCALAR

MAX_POINTS = 30_000_000  # ~24 bytes a point: 0.7 GB at most
_COLUMNS = "seq, metric, variant, COALESCE(iter, 0), timestamp, json_extract(doc, '$.value')"


@dataclass
class Series:
    """One (metric, variant): points in arrival order, plus views sorted by each x axis."""

    iters: array[float] = field(default_factory=lambda: array("d"))
    times: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))
    _sorted: dict[str, tuple[array[float], array[float]]] = field(default_factory=dict)

    def add(self, iteration: float, stamp: float, value: float) -> None:
        self.iters.append(iteration)
        self.times.append(stamp / 1000.0)
        self.values.append(value)
        self._sorted.clear()

    def view(self, axis: str) -> tuple[array[float], array[float]]:
        """(xs, ys) sorted by x: the iteration, or the wall time (seconds)."""
        if axis not in self._sorted:
            xs = self.times if axis == "time" else self.iters
            x = np.frombuffer(xs, dtype=np.float64)
            if bool(np.all(x[1:] >= x[:-1])):
                self._sorted[axis] = (xs, self.values)
            else:
                order = np.argsort(x, kind="stable")
                y = np.frombuffer(self.values, dtype=np.float64)
                self._sorted[axis] = (
                    array("d", x[order].tobytes()),
                    array("d", y[order].tobytes()),
                )
        return self._sorted[axis]


@dataclass
class TaskSeries:
    first_seq: int
    last_seq: int
    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    points: int = 0

    def add_rows(self, rows: Iterable[tuple[int, str, str, float, float, float | None]]) -> None:
        for seq, metric, variant, iteration, stamp, value in rows:
            self.last_seq = max(self.last_seq, seq)
            if value is None:
                continue
            key = (metric or "", variant or "")
            found = self.series.get(key)
            if found is None:
                found = self.series[key] = Series()
            found.add(iteration, stamp, float(value))
            self.points += 1


_cache: OrderedDict[str, TaskSeries] = OrderedDict()
_lock = threading.Lock()


def _first_seq(conn: sqlite3.Connection, task_id: str) -> int:
    row = conn.execute(
        "SELECT seq FROM events WHERE task=? AND type=? ORDER BY timestamp, seq LIMIT 1",
        (task_id, SCALAR),
    ).fetchone()
    return int(row[0]) if row else 0


def task_series(conn: sqlite3.Connection, task_id: str) -> TaskSeries:
    """The task's series, read or brought up to date (call inside one read snapshot)."""
    first = _first_seq(conn, task_id)
    latest = int(conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0)
    with _lock:
        cached = _cache.get(task_id)
        if cached is None or cached.first_seq != first:
            cached = TaskSeries(first_seq=first, last_seq=latest)
            # iterated, not fetched whole: millions of rows never sit in memory as tuples
            cached.add_rows(
                conn.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE task=? AND type=? AND seq <= ?",
                    (task_id, SCALAR, latest),
                )
            )
            cached.last_seq = latest
        elif cached.last_seq < latest:
            cached.add_rows(
                conn.execute(
                    f"SELECT {_COLUMNS} FROM events NOT INDEXED WHERE seq > ? AND seq <= ? "
                    "AND task=? AND type=? ORDER BY seq",
                    (cached.last_seq, latest, task_id, SCALAR),
                )
            )
            cached.last_seq = latest
        _cache[task_id] = cached
        _cache.move_to_end(task_id)
        while len(_cache) > 1 and sum(t.points for t in _cache.values()) > MAX_POINTS:
            _cache.popitem(last=False)
    return cached
