"""The scalars tab's data: every reported series, reduced on the server per pixel column.

M4 reduction: for each of ``width`` buckets of the x range, the first, last, lowest and
highest points are kept, so a line drawn through them looks the same as one drawn through all
points (no spike is averaged away). A range with few points comes back raw.
"""

from __future__ import annotations

import sqlite3
from array import array
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from agent.server.web.series_cache import task_series

MAX_WIDTH = 4_000


def m4(
    xs: list[float], ys: list[float], width: int, x0: float | None = None, x1: float | None = None
) -> tuple[list[float], list[float]]:
    """Points (any order) reduced to at most 4 per bucket of ``width`` buckets on [x0, x1]."""
    pairs = sorted(zip(xs, ys, strict=True))
    return m4_sorted(
        array("d", (p[0] for p in pairs)), array("d", (p[1] for p in pairs)), width, x0, x1
    )


def m4_sorted(
    xs: Sequence[float], ys: array[float], width: int, x0: float | None, x1: float | None
) -> tuple[list[float], list[float]]:
    """M4 over points sorted by x: per bucket the first, last, lowest and highest point. Each
    bucket is found by bisection and scanned by C loops (min, max, index of an array slice)."""
    lo = 0 if x0 is None else bisect_left(xs, x0)
    hi = len(xs) if x1 is None else bisect_right(xs, x1)
    if hi - lo <= 4 * width or hi - lo < 2:
        return list(xs[lo:hi]), list(ys[lo:hi])
    low, span = xs[lo], (xs[hi - 1] - xs[lo]) or 1.0
    out_x: list[float] = []
    out_y: list[float] = []
    start = lo
    for bucket in range(width):
        end = (
            hi
            if bucket == width - 1
            else bisect_right(xs, low + span * (bucket + 1) / width, start, hi)
        )
        if end <= start:
            continue
        segment = ys[start:end]
        lowest = start + segment.index(min(segment))
        highest = start + segment.index(max(segment))
        for i in sorted({start, lowest, highest, end - 1}):
            out_x.append(xs[i])
            out_y.append(ys[i])
        start = end
    return out_x, out_y


def metric_names(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(metric, variants) for every series the task reported, from its ``last_metrics``."""
    found: dict[str, set[str]] = defaultdict(set)
    for variants in (doc.get("last_metrics") or {}).values():
        for item in variants.values():
            if isinstance(item, dict) and "metric" in item:
                found[str(item["metric"])].add(str(item.get("variant", "")))
    return [(m, sorted(v)) for m, v in sorted(found.items())]


def series(
    conn: sqlite3.Connection,
    task_id: str,
    metric: str,
    *,
    width: int,
    x_axis: str = "iter",
    x0: float | None = None,
    x1: float | None = None,
) -> list[dict[str, Any]]:
    """Every variant of ``metric``, M4-reduced to ``width`` buckets of [x0, x1]."""
    width = max(1, min(width, MAX_WIDTH))
    cached = task_series(conn, task_id)
    out = []
    for (name, variant), points in sorted(cached.series.items()):
        if name != metric:
            continue
        xs, ys = points.view("time" if x_axis == "time" else "iter")
        rx, ry = m4_sorted(xs, ys, width, x0, x1)
        out.append({"variant": variant, "x": rx, "y": ry, "count": len(xs)})
    return out
