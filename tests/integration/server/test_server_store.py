"""The SQLite store: migrations, WAL, and a queue pop that is an index seek."""

from __future__ import annotations

import gc
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from agent.server.schema import MIGRATIONS
from agent.server.store import Store, StoreError
from tests.helpers import api_raw, token_for


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


def test_a_database_of_the_first_version_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    conn = sqlite3.connect(db)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('kept', 'yes')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    store = Store(db)
    assert store.schema_version == len(MIGRATIONS)
    assert store.conn().execute("SELECT value FROM meta WHERE key='kept'").fetchone() == ("yes",)
    assert store.conn().execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)
    store.close()


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


def test_database_held_by_another_process_is_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.server.store.BUSY_TIMEOUT_MS", 200)
    with EmbeddedServer(tmp_path / "s.db") as server:
        token = token_for(server)  # before the lock: login itself only reads
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            response = api_raw(server, "tasks.create", {"name": "x"}, token=token)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert response.status_code == 503
        assert "database busy" in response.json()["meta"]["result_msg"]
        assert api_raw(server, "tasks.create", {"name": "x"}).status_code == 200


def test_connections_of_finished_threads_are_released(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    threads = [threading.Thread(target=lambda: store.conn().execute("SELECT 1")) for _ in range(5)]
    for thread in threads:
        thread.start()
        thread.join()
    gc.collect()
    assert len(store._all) == 1  # only this thread's (the one that ran the migrations)
    store.close()
