"""The bounded per-worker machine stats history behind the queues page's small charts."""

from __future__ import annotations

from agent.server.machine_history import (
    KEEP_SECONDS,
    MAX_POINTS,
    MAX_WORKERS,
    MachineHistory,
    point,
)


def test_point_averages_per_device_lists_and_ignores_junk() -> None:
    assert point({"cpu_usage": [10, 30], "memory_used": 512, "gpu_usage": [50.0]}) == (
        20.0, 512.0, 50.0,
    )  # fmt: skip
    assert point({"cpu_usage": [], "memory_used": "lots", "gpu_usage": True}) == (None, None, None)
    assert point({}) == (None, None, None)


def test_history_keeps_the_last_hour_and_at_most_max_points() -> None:
    history = MachineHistory()
    history.record("w", {"cpu_usage": [1]}, now=0.0)
    history.record("w", {"cpu_usage": [2]}, now=KEEP_SECONDS + 1)
    assert history.series("w")["cpu"] == [2.0]  # the first report is over an hour older
    for i in range(MAX_POINTS + 10):
        history.record("w", {"cpu_usage": [i]}, now=KEEP_SECONDS + 2 + i * 0.1)
    cpu = history.series("w")["cpu"]
    assert len(cpu) == MAX_POINTS and cpu[-1] == MAX_POINTS + 9
    history.forget("w")
    assert history.series("w") == {"time": [], "cpu": [], "memory": [], "gpu": []}


def test_workers_that_never_unregister_are_dropped_oldest_first() -> None:
    history = MachineHistory()
    for i in range(MAX_WORKERS):
        history.record(f"w{i}", {"cpu_usage": [1]}, now=float(i))
    history.record("w0", {"cpu_usage": [2]}, now=5_000.0)  # w0 reports again: w1 is the oldest
    history.record("new", {"cpu_usage": [3]}, now=5_001.0)
    assert history.series("w1")["cpu"] == []
    assert history.series("w0")["cpu"] == [2.0]  # its first report was over an hour older
    assert history.series("new")["cpu"] == [3.0] and history.series("w2")["cpu"] == [1.0]
