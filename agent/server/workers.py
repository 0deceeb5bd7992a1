"""workers.*: agents announce themselves and report every few seconds; the watchdog drops
the silent ones (see watchdog.py)."""

from __future__ import annotations

import fnmatch
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.server import claims
from agent.server.accepts import accepts
from agent.server.errors import bad_request
from agent.server.fields import opt_dict, opt_float, opt_int, opt_str, opt_str_list, req_str
from agent.server.filters import tags_match
from agent.server.listing import TRANSPORT
from agent.server.registry import Call, endpoint
from agent.server.state import COMPANY_ID, DEFAULT_WORKER_TIMEOUT, ServerConfig
from agent.server.store import dumps, loads, now_iso
from agent.server.taskstore import find_task, save_task

MAX_WORKER_TIMEOUT = 7 * 24 * 3600.0
_GET_ALL_FIELDS = frozenset({"last_seen", "tags", "system_tags", "worker_pattern"})


def effective_timeout(config: ServerConfig, registered: float) -> float:
    """The server-wide override (tests, operators) wins over a worker's own timeout."""
    return config.worker_timeout or registered or DEFAULT_WORKER_TIMEOUT


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _timeout(call: Call) -> float | None:
    value = opt_float(call.body, "timeout")
    if value is not None and not 0 < value <= MAX_WORKER_TIMEOUT:
        raise bad_request(f"field 'timeout' must be between 0 and {MAX_WORKER_TIMEOUT:.0f} s")
    return value


def _upsert(conn: sqlite3.Connection, call: Call, timeout: float | None) -> dict[str, Any]:
    worker_id = req_str(call.body, "worker")
    now = time.time()
    row = conn.execute("SELECT doc, timeout FROM workers WHERE id=?", (worker_id,)).fetchone()
    doc: dict[str, Any] = (
        loads(row[0])
        if row
        else {
            "id": worker_id,
            "user": {"id": call.user, "name": call.user},
            "company": {"id": COMPANY_ID, "name": COMPANY_ID},
            "register_time": _iso(now),
            "queues": [],
            "tags": [],
            "system_tags": [],
        }
    )
    queues = opt_str_list(call.body, "queues")
    if queues is not None:
        doc["queues"] = queues
    for key in ("tags", "system_tags"):
        tags = opt_str_list(call.body, key)
        if tags is not None:
            doc[key] = tags
    doc["last_activity_time"] = _iso(now)
    registered = timeout or (float(row[1]) if row else DEFAULT_WORKER_TIMEOUT)
    conn.execute(
        "INSERT INTO workers (id, last_report, timeout, task, doc) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET last_report=excluded.last_report, "
        "timeout=excluded.timeout, doc=excluded.doc",
        (worker_id, now, registered, None, dumps(doc)),
    )
    return doc


@endpoint(
    "workers.register", inline=True, accepts=accepts("worker queues tags system_tags timeout")
)
def register(call: Call) -> dict[str, Any]:
    """Announce a worker; a new process under a known id gives back what the old one popped
    and never started (claims.py)."""
    timeout = _timeout(call)
    with call.store.write() as conn:
        _upsert(conn, call, timeout)
        claims.release(conn, req_str(call.body, "worker"))
    return {}


# Ignored: ``timestamp`` (the server stamps a report with its own clock), ``is_daemon``
# (clearml-agent's label of a daemon's own reports).
@endpoint(
    "workers.status_report",
    inline=True,
    accepts=accepts(
        "worker task queue queues machine_stats tags system_tags timeout",
        ignored="timestamp is_daemon",
    ),
)
def status_report(call: Call) -> dict[str, Any]:
    """Refresh the worker (registering it if unknown) and the task it runs."""
    task_id = opt_str(call.body, "task")
    queue_id = opt_str(call.body, "queue")
    stats = opt_dict(call.body, "machine_stats")
    with call.store.write() as conn:
        doc = _upsert(conn, call, _timeout(call))
        doc["last_report_time"] = now_iso()
        doc["machine_stats"] = stats or {}
        doc["queue"] = queue_id or None
        task = find_task(conn, task_id) if task_id else None
        doc["task"] = {"id": task["id"], "name": task["name"]} if task else None
        if task is not None and _may_claim(conn, task, doc["id"]):
            task["last_worker"] = doc["id"]
            task["last_worker_report"] = doc["last_report_time"]
            save_task(conn, task)
        conn.execute(
            "UPDATE workers SET task=?, doc=? WHERE id=?",
            (task["id"] if task else None, dumps(doc), doc["id"]),
        )
    call.state.machine_history.record(str(doc["id"]), stats or {})
    return {}


def _may_claim(conn: sqlite3.Connection, task: dict[str, Any], worker_id: str) -> bool:
    """A report makes its worker the task's ``last_worker`` unless another live worker still
    reports the task: a cut-off agent reporting its old attempt must not take the task from
    the worker running the new one (the watchdog would then rescue the wrong attempt)."""
    owner = task.get("last_worker")
    if owner in ("", None, worker_id):
        return True
    found = conn.execute("SELECT 1 FROM workers WHERE id=? AND task=?", (owner, task["id"]))
    return found.fetchone() is None


# ``queues``: clearml-agent sends its queues when it unregisters; the worker goes, with them.
@endpoint("workers.unregister", inline=True, accepts=accepts("worker", ignored="queues"))
def unregister(call: Call) -> dict[str, Any]:
    worker_id = req_str(call.body, "worker")
    with call.store.write() as conn:
        conn.execute("DELETE FROM workers WHERE id=?", (worker_id,))
        claims.release(conn, worker_id)
    call.state.machine_history.forget(worker_id)
    return {}


@dataclass(frozen=True)
class _WorkerFilter:
    last_seen: int | None
    tags: list[str]
    system_tags: list[str]
    pattern: str  # a shell-style wildcard on the worker id (clearml-agent sends "name*")

    def keep(self, doc: dict[str, Any], last_report: float, now: float) -> bool:
        if self.last_seen and now - last_report > self.last_seen:
            return False
        if self.pattern and not fnmatch.fnmatchcase(str(doc.get("id", "")), self.pattern):
            return False
        return tags_match(doc.get("tags", []), self.tags) and tags_match(
            doc.get("system_tags", []), self.system_tags
        )


def _get_all_filter(call: Call) -> _WorkerFilter:
    for key in call.body:
        if key not in _GET_ALL_FIELDS and key not in TRANSPORT:
            raise bad_request(f"field '{key}' is not supported by workers.get_all")
    last_seen = opt_int(call.body, "last_seen")
    if last_seen is not None and last_seen < 0:
        raise bad_request("field 'last_seen' must be >= 0 (seconds)")
    return _WorkerFilter(
        last_seen,
        opt_str_list(call.body, "tags") or [],
        opt_str_list(call.body, "system_tags") or [],
        opt_str(call.body, "worker_pattern"),
    )


@endpoint("workers.get_all")
def get_all(call: Call) -> dict[str, Any]:
    """Workers, optionally only those seen in the last ``last_seen`` seconds, by tags, or
    whose id matches ``worker_pattern``."""
    wanted = _get_all_filter(call)
    conn = call.store.conn()
    names = {str(r[0]): str(r[1]) for r in conn.execute("SELECT id, name FROM queues")}
    out = []
    now = time.time()
    for row in conn.execute("SELECT doc, last_report FROM workers ORDER BY id"):
        doc = loads(row[0])
        if not wanted.keep(doc, float(row[1]), now):
            continue
        doc["last_report_time"] = _iso(float(row[1]))
        doc["queues"] = [{"id": q, "name": names.get(q, q)} for q in doc.get("queues", [])]
        queue = doc.get("queue")
        doc["queue"] = {"id": queue, "name": names.get(queue, queue)} if queue else None
        out.append(doc)
    return {"workers": out}


@endpoint("workers.get_runtime_properties", inline=True)
def get_runtime_properties(call: Call) -> dict[str, Any]:
    return {"runtime_properties": []}
