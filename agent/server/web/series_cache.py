"""The last charted series, decoded, so a chart's refreshes and zooms skip reading its blocks.

A series is read whole from its packed blocks (``agent/server/scalar_store.py``) the first
time; later requests check two index seeks (``scalar_store.extent``): unchanged, it is served
from memory; grown (a running task), only its last block and the new ones are read; stored
again (a reset: its first block has a new id), it is read again. At most ``MAX_POINTS`` points
are kept (~16 bytes each: 64 MB), least recently used series dropped first; a series bigger
than that is never kept: each request reads only the blocks its x range meets.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.server import scalar_store

MAX_POINTS = 4_000_000
Floats = npt.NDArray[np.float64]
Key = tuple[str, str, str, str]  # task, metric, variant, axis


@dataclass
class _Cached:
    extent: tuple[int, int, int]
    x: Floats  # arrival order
    y: Floats
    sorted_xy: tuple[Floats, Floats] | None = None

    def view(self) -> tuple[Floats, Floats]:
        if self.sorted_xy is None:
            self.sorted_xy = _sorted(self.x, self.y)
        return self.sorted_xy

    def size(self) -> int:
        """Points held, a sorted copy included."""
        copied = self.sorted_xy is not None and self.sorted_xy[0] is not self.x
        return len(self.x) * (2 if copied else 1)


def _sorted(x: Floats, y: Floats) -> tuple[Floats, Floats]:
    """(x, y) sorted by x (stable: arrival order among equal x)."""
    if len(x) > 1 and not bool(np.all(x[1:] >= x[:-1])):
        order = np.argsort(x, kind="stable")
        return x[order], y[order]
    return x, y


_cache: OrderedDict[Key, _Cached] = OrderedDict()
_lock = threading.Lock()


def _read(
    conn: sqlite3.Connection,
    key: Key,
    from_block: int,
    x0: float | None = None,
    x1: float | None = None,
) -> tuple[Floats, Floats]:
    xs: list[bytes] = []
    ys: list[bytes] = []
    for x_blob, y_blob in scalar_store.blobs(conn, key[:3], key[3], x0, x1, from_block):
        xs.append(x_blob)
        ys.append(y_blob)
    x = np.frombuffer(b"".join(xs), dtype="<f8").astype(np.float64, copy=False)
    y = np.frombuffer(b"".join(ys), dtype="<f8").astype(np.float64, copy=False)
    return x, y


def _fresh(
    conn: sqlite3.Connection, key: Key, extent: tuple[int, int, int], old: _Cached | None
) -> _Cached:
    if old is not None and old.extent == extent:
        return old
    if old is not None and old.extent[0] == extent[0] and old.extent[1:] <= extent[1:]:
        kept = old.extent[1] * scalar_store.BLOCK  # the full blocks read before
        x, y = _read(conn, key, old.extent[1])
        return _Cached(extent, np.concatenate([old.x[:kept], x]), np.concatenate([old.y[:kept], y]))
    x, y = _read(conn, key, 0)
    return _Cached(extent, x, y)


def points(
    conn: sqlite3.Connection, key: Key, x0: float | None, x1: float | None
) -> tuple[Floats, Floats]:
    """The series' points sorted by x, all of them or (a series too big to keep) those of the
    blocks that meet [x0, x1]; call inside one read snapshot."""
    extent = scalar_store.extent(conn, key[:3])
    if extent is None:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty
    if extent[1] * scalar_store.BLOCK + extent[2] > MAX_POINTS:
        return _sorted(*_read(conn, key, 0, x0, x1))
    with _lock:
        old = _cache.pop(key, None)
    found = _fresh(conn, key, extent, old)
    view = found.view()
    with _lock:
        _cache[key] = found
        while len(_cache) > 1 and sum(c.size() for c in _cache.values()) > MAX_POINTS:
            _cache.popitem(last=False)
    return view
