"""The scalars tab's data: every reported series, reduced on the server per pixel column.

M4 reduction: for each of ``width`` buckets of the x range, the first, last, lowest and
highest points are kept, so a line drawn through them looks the same as one drawn through all
points (no spike is averaged away). A range with few points comes back raw.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Any

from agent.server.events import SCALAR

MAX_WIDTH = 4_000


def m4(
    xs: list[float], ys: list[float], width: int, x0: float | None = None, x1: float | None = None
) -> tuple[list[float], list[float]]:
    """Points (sorted by x) reduced to at most 4 per bucket of ``width`` buckets on [x0, x1]."""
    pairs = sorted(
        (x, y) for x, y in zip(xs, ys, strict=True)
        if (x0 is None or x >= x0) and (x1 is None or x <= x1)
    )  # fmt: skip
    if len(pairs) <= 4 * width or len(pairs) < 2:
        return [p[0] for p in pairs], [p[1] for p in pairs]
    low, high = pairs[0][0], pairs[-1][0]
    span = (high - low) or 1.0
    buckets: dict[int, list[tuple[float, float]]] = {}
    for x, y in pairs:
        key = min(width - 1, int((x - low) * width / span))
        kept = buckets.get(key)
        if kept is None:
            buckets[key] = [(x, y), (x, y), (x, y), (x, y)]  # first, min, max, last
            continue
        if y < kept[1][1]:
            kept[1] = (x, y)
        if y > kept[2][1]:
            kept[2] = (x, y)
        kept[3] = (x, y)
    out = sorted({p for kept in buckets.values() for p in kept})
    return [p[0] for p in out], [p[1] for p in out]


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
    column = "timestamp" if x_axis == "time" else "COALESCE(iter, 0)"
    rows = conn.execute(
        f"SELECT variant, {column}, json_extract(doc, '$.value') FROM events "
        "WHERE task=? AND type=? AND metric=?",
        (task_id, SCALAR, metric),
    )
    points: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for variant, x, y in rows:
        if y is None:
            continue
        xs, ys = points[variant or ""]
        xs.append(x / 1000.0 if x_axis == "time" else x)
        ys.append(float(y))
    out = []
    for variant in sorted(points):
        xs, ys = points[variant]
        rx, ry = m4(xs, ys, width, x0, x1)
        out.append({"variant": variant, "x": rx, "y": ry, "count": len(xs)})
    return out
