"""A bounded, in-memory history of each worker's machine stats (``workers.status_report``) for
the web console's small charts: CPU %, memory used (MB) and GPU % over the last hour."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

KEEP_SECONDS = 3600.0
MAX_POINTS = 720  # an hour at one report every 5 s; faster reporters keep a shorter window
MAX_WORKERS = 1_000  # workers gone without unregistering (timed out) are dropped oldest first
SERIES = ("cpu", "memory", "gpu")


def _mean(value: Any) -> float | None:
    """A number, or the mean of a list of numbers (per-CPU / per-GPU values); None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        numbers = [
            float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        return sum(numbers) / len(numbers) if numbers else None
    return None


def point(stats: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(CPU %, memory used MB, GPU %) from a report's ``machine_stats``."""
    return (
        _mean(stats.get("cpu_usage")),
        _mean(stats.get("memory_used")),
        _mean(stats.get("gpu_usage")),
    )


class MachineHistory:
    """Per worker, the reports of the last ``KEEP_SECONDS`` (at most ``MAX_POINTS``); lost at a
    server restart (the charts are a glance, not a record)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: dict[str, deque[tuple[float, float | None, float | None, float | None]]] = {}

    def record(self, worker: str, stats: Mapping[str, Any], now: float | None = None) -> None:
        stamp = time.time() if now is None else now
        with self._lock:
            if worker not in self._points and len(self._points) >= MAX_WORKERS:
                stale = min(self._points, key=lambda w: self._points[w][-1][0])
                del self._points[stale]
            points = self._points.setdefault(worker, deque(maxlen=MAX_POINTS))
            points.append((stamp, *point(stats)))
            while points and points[0][0] < stamp - KEEP_SECONDS:
                points.popleft()

    def forget(self, worker: str) -> None:
        with self._lock:
            self._points.pop(worker, None)

    def series(self, worker: str) -> dict[str, list[float | None]]:
        """``{"time": [...], "cpu": [...], "memory": [...], "gpu": [...]}``, oldest first."""
        with self._lock:
            rows = list(self._points.get(worker, ()))
        columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
        return {name: list(col) for name, col in zip(("time", *SERIES), columns, strict=True)}
