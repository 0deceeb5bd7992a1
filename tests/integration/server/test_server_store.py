"""The SQLite store: migrations, WAL, and a queue pop that is an index seek."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.server.schema import MIGRATIONS
from agent.server.store import Store, StoreError


def test_migrations_versioned_and_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = Store(db)
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    again = Store(db)  # re-opening applies nothing twice
    assert again.schema_version == len(MIGRATIONS)
    mode = again.conn().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(db)


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(RuntimeError), store.write() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        raise RuntimeError("boom")
    assert store.get_meta("k") is None
    store.close()


def test_queue_pop_plan_is_an_index_seek(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    plan = (
        store.conn()
        .execute(
            "EXPLAIN QUERY PLAN SELECT position, task, added FROM queue_entries "
            "WHERE queue=? ORDER BY position LIMIT 1",
            ("q",),
        )
        .fetchall()
    )
    details = " ".join(str(row[-1]) for row in plan)
    assert "SEARCH queue_entries USING PRIMARY KEY (queue=?)" in details
    assert "TEMP B-TREE" not in details  # no sort: the index order is the queue order
    store.close()
