"""Scalar series kept as packed blocks (schema v3): written with the events, copied in for a
database stored before them, deleted with a task's events, read back exactly by the chart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.server import scalar_store
from agent.server.embedded import EmbeddedServer
from agent.server.schema import MIGRATIONS
from agent.server.store import Store, dumps
from agent.server.web.scalars import series
from tests.helpers import api_call


def _scalar(task: str, i: int, value: float, variant: str = "v") -> dict[str, object]:
    return {"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": variant,
            "iter": i, "value": value, "timestamp": 1_000_000 + i}  # fmt: skip


def test_batches_fill_blocks_and_the_chart_reads_every_point_back(
    embedded_server: EmbeddedServer,
) -> None:
    task = api_call(embedded_server, "tasks.create", {"name": "s", "type": "training"})["id"]
    values = {i: float((i * 37) % 101) for i in range(2500)}
    order = list(range(1000, 2500)) + list(range(1000))  # late points come out of order
    for start in range(0, 2500, 700):  # batches that end in the middle of a block
        batch = [_scalar(task, i, values[i]) for i in order[start : start + 700]]
        api_call(embedded_server, "events.add_batch", {"requests": batch})
    conn = embedded_server.state.store.conn()
    rows = conn.execute(
        "SELECT block, count FROM scalar_blocks WHERE task=? ORDER BY block", (task,)
    ).fetchall()
    assert rows == [(0, scalar_store.BLOCK), (1, scalar_store.BLOCK), (2, 2500 - 2048)]
    (raw,) = series(conn, task, "loss", width=4000)
    assert raw["count"] == 2500 and raw["x"] == [float(i) for i in range(2500)]
    assert raw["y"] == [values[i] for i in range(2500)]
    (zoom,) = series(conn, task, "loss", width=4000, x0=100, x1=110)
    assert zoom["x"] == [float(i) for i in range(100, 111)]
    (by_time,) = series(conn, task, "loss", width=4000, x_axis="time", x0=1000.5, x1=1000.51)
    assert by_time["x"] == [1000.5 + i / 1000 for i in range(11)]
    more = [_scalar(task, i, -1.0) for i in range(2500, 2600)]  # a running task's new points
    api_call(embedded_server, "events.add_batch", {"requests": more})
    (grown,) = series(conn, task, "loss", width=4000)  # the cached series, brought up to date
    assert grown["x"] == [float(i) for i in range(2600)]
    assert grown["y"] == [values[i] for i in range(2500)] + [-1.0] * 100


def test_a_reset_or_deleted_task_loses_its_blocks(embedded_server: EmbeddedServer) -> None:
    conn = embedded_server.state.store.conn()
    tasks = [api_call(embedded_server, "tasks.create", {"name": n})["id"] for n in ("a", "b")]
    for task in tasks:
        api_call(embedded_server, "events.add_batch", {"requests": [_scalar(task, 1, 2.0)]})
    assert series(conn, tasks[0], "loss", width=10)[0]["y"] == [2.0]  # now cached
    api_call(embedded_server, "tasks.reset", {"task": tasks[0], "force": True})
    api_call(embedded_server, "tasks.delete", {"task": tasks[1], "force": True})
    for task in tasks:
        count = conn.execute("SELECT COUNT(*) FROM scalar_blocks WHERE task=?", (task,))
        assert count.fetchone() == (0,)
        assert series(conn, task, "loss", width=10) == []
    api_call(embedded_server, "events.add_batch", {"requests": [_scalar(tasks[0], 1, 5.0)]})
    assert series(conn, tasks[0], "loss", width=10)[0]["y"] == [5.0]  # same size, a new first block
    again = api_call(embedded_server, "tasks.create", {"name": "c"})["id"]
    api_call(embedded_server, "events.add_batch", {"requests": [_scalar(again, 3, 4.0)]})
    api_call(embedded_server, "events.delete_for_task", {"task": again})
    assert series(conn, again, "loss", width=10) == []


def test_scalars_stored_before_v3_are_copied_into_blocks(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    conn = sqlite3.connect(db)
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        assert isinstance(statement, str)
        conn.execute(statement)
    events = [_scalar("t1", i, i / 2, variant=str(i % 2)) for i in range(3000)]
    events.append({**_scalar("t1", 5, 0.0, variant="1"), "value": None})  # a bad old row is skipped
    conn.executemany(
        "INSERT INTO events (task, type, timestamp, iter, metric, variant, doc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(e["task"], e["type"], e["timestamp"], e["iter"], e["metric"], e["variant"], dumps(e))
         for e in events],
    )  # fmt: skip
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    store = Store(db)
    assert store.schema_version == len(MIGRATIONS)
    got = {s["variant"]: s for s in series(store.conn(), "t1", "loss", width=4000)}
    assert sorted(got) == ["0", "1"] and got["0"]["count"] == got["1"]["count"] == 1500
    assert got["1"]["x"] == [float(i) for i in range(1, 3000, 2)]
    assert got["1"]["y"] == [i / 2 for i in range(1, 3000, 2)]
    store.close()
