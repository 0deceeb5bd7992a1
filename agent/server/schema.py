"""The SQLite schema as an ordered list of migrations; ``PRAGMA user_version`` counts them.

Never edit a released migration: append a new one. Each migration is a tuple of statements (or
functions of the connection, for what SQL cannot do) run in one transaction together with the
``user_version`` bump.

Documents are JSON in ``doc`` columns; the columns beside them are copies of the fields we
filter or order on. ``queue_entries`` is keyed by (queue, position) so popping the head of a
queue is one index seek, whatever the queue depth.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from agent.server import scalar_store

Step = str | Callable[[sqlite3.Connection], None]

_V1: tuple[str, ...] = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE credentials (
        access_key TEXT PRIMARY KEY,
        secret_key TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created TEXT NOT NULL)""",
    """CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created TEXT NOT NULL,
        doc TEXT NOT NULL)""",
    """CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        project TEXT,
        status TEXT NOT NULL,
        type TEXT NOT NULL,
        created TEXT NOT NULL,
        last_update TEXT NOT NULL,
        requeues INTEGER NOT NULL DEFAULT 0,
        doc TEXT NOT NULL)""",
    "CREATE INDEX tasks_project ON tasks (project, last_update)",
    "CREATE INDEX tasks_status ON tasks (status)",
    "CREATE INDEX tasks_created ON tasks (created)",
    """CREATE TABLE queues (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created TEXT NOT NULL,
        doc TEXT NOT NULL)""",
    """CREATE TABLE queue_entries (
        queue TEXT NOT NULL,
        position INTEGER NOT NULL,
        task TEXT NOT NULL UNIQUE,
        added TEXT NOT NULL,
        PRIMARY KEY (queue, position)) WITHOUT ROWID""",
    """CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        last_report REAL NOT NULL,
        timeout REAL NOT NULL,
        task TEXT,
        doc TEXT NOT NULL)""",
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        task TEXT NOT NULL,
        type TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        iter INTEGER,
        metric TEXT,
        variant TEXT,
        doc TEXT NOT NULL)""",
    "CREATE INDEX events_task_type_time ON events (task, type, timestamp, seq)",
    """CREATE TABLE models (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        project TEXT,
        task TEXT,
        uri TEXT,
        created TEXT NOT NULL,
        doc TEXT NOT NULL)""",
    "CREATE INDEX models_uri ON models (uri)",
    "CREATE INDEX models_task ON models (task)",
)

# v2: which worker popped a task it has not started yet (so a worker that goes away between
# get_next_task and tasks.started does not take the task with it).
_V2: tuple[str, ...] = (
    """CREATE TABLE claims (
        task TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        worker TEXT NOT NULL,
        popped REAL NOT NULL)""",
    "CREATE INDEX claims_worker ON claims (worker)",
)

# v3: every scalar series as blocks of packed doubles, so a chart reads one series without
# parsing the JSON of every scalar event of its task (agent/server/scalar_store.py); the
# scalars stored before it are copied in once.
_V3: tuple[Step, ...] = (*scalar_store.CREATE, scalar_store.backfill)

MIGRATIONS: tuple[tuple[Step, ...], ...] = (_V1, _V2, _V3)
