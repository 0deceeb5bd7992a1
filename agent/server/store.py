"""SQLite storage: one connection per thread, WAL, versioned migrations, short transactions.

Readers never block (WAL). Writers take ``BEGIN IMMEDIATE`` so a read-modify-write (such as
popping a queue head) is atomic; an in-process lock queues writers of this process so they do not
spin in SQLite's busy handler; ``busy_timeout`` still covers other processes on the same file.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from agent.server.schema import MIGRATIONS

BUSY_TIMEOUT_MS = 10_000


class StoreError(RuntimeError):
    """The database file cannot be used (e.g. written by a newer Conveyor)."""


def new_id() -> str:
    return uuid.uuid4().hex


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> Any:
    return json.loads(text)


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _regexp(pattern: str | None, value: str | None) -> bool:
    if pattern is None or value is None:
        return False
    compiled = _compile(pattern)
    return bool(compiled and compiled.search(value))


def valid_regex(pattern: str) -> bool:
    return _compile(pattern) is not None


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the base class cannot), and that notes the
    queues its write transaction pushed to (``Store.on_push`` hears of them after commit)."""

    pushed: set[str]


def note_push(conn: sqlite3.Connection, queue_id: str) -> None:
    """Inside a write transaction: ``queue_id`` gained an entry (announced after commit)."""
    if isinstance(conn, _Connection):
        conn.pushed.add(queue_id)


class Store:
    """The database of one server. Thread-safe: each thread gets its own connection.

    Connections are held by the thread (``threading.local``) and only weakly by the store:
    when a pool thread ends, its connection is closed with it; ``close`` closes the rest.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._all_lock = threading.Lock()
        self._closed = False
        self.on_push: Callable[[str], None] | None = None  # a queue gained an entry (committed)
        self._migrate()

    # --- connections ---------------------------------------------------------------------
    def _connect(self) -> _Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1e3,
            factory=_Connection,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.create_function("regexp", 2, _regexp, deterministic=True)
        conn.pushed = set()
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: each statement is its own transaction)."""
        if self._closed:
            raise StoreError("store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.add(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): all or nothing. Queues it pushed to are
        announced to ``on_push`` once it committed."""
        conn = self.conn()
        assert isinstance(conn, _Connection)
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.pushed.clear()
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            pushed, conn.pushed = conn.pushed, set()
        if self.on_push is not None:
            for queue_id in pushed:
                self.on_push(queue_id)

    def write_busy(self) -> bool:
        """Is a write transaction of this process in progress (so a new one would wait)?"""
        return self._write_lock.locked()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several reads."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            for conn in list(self._all):
                conn.close()
            self._all.clear()

    # --- migrations ----------------------------------------------------------------------
    def _migrate(self) -> None:
        conn = self.conn()
        with self.write():
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this Conveyor "
                    f"knows ({len(MIGRATIONS)}): upgrade Conveyor or use another --db"
                )
            for number in range(version, len(MIGRATIONS)):
                for step in MIGRATIONS[number]:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
                conn.execute(f"PRAGMA user_version={number + 1}")

    @property
    def schema_version(self) -> int:
        return int(self.conn().execute("PRAGMA user_version").fetchone()[0])

    # --- small helpers -------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
        (key, value),
    )
