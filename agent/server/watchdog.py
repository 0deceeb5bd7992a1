"""The worker watchdog: drop workers silent past their timeout and rescue their task.

A lost worker's in-progress task follows the retry policy (agent/retry.py), the same one an
agent applies when it restarts and finds its task: back to the FRONT of its queue (it was next
in line once already) with its attempt counter raised (``runtime.conveyor_attempt``), until the
task's cap; then it fails with "lost worker". Either way a closing line goes on the lost
attempt's console. clearml-server has no such requeue. The decision is a pure function
(``decide``); ``sweep`` applies it in one transaction per worker; ``Watchdog`` runs sweeps in
a thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import structlog

from agent import retry
from agent.server import claims, queue_ops
from agent.server.lifecycle import FAILED, IN_PROGRESS, QUEUED
from agent.server.state import ServerState
from agent.server.store import StoreError, dumps, loads
from agent.server.taskstore import find_task, save_task, set_status
from agent.server.workers import effective_timeout

log = structlog.get_logger()

LOST_WORKER = retry.LOST_WORKER
CONSOLE_PREFIX = "conveyor: "  # as the agent marks its own console lines


class Outcome(Enum):
    NOTHING = "nothing"  # no task, or the task moved on (finished, or another worker has it)
    REQUEUE = "requeue"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str  # status_reason
    message: str = ""  # status_message
    console: str = ""  # the closing line on the lost attempt's console
    next_attempt: int = 1


def decide(
    worker_id: str, task: dict[str, Any] | None, has_queue: bool, default_retries: int
) -> Decision:
    """What to do with the task a lost worker was running (the retry policy's answer)."""
    if task is None or task.get("status") != IN_PROGRESS:
        return Decision(Outcome.NOTHING, "no task in progress")
    if task.get("last_worker") not in ("", None, worker_id):
        return Decision(Outcome.NOTHING, "task now belongs to another worker")
    runtime = task.get("runtime") or {}
    limits = retry.limits_or_default(task.get("hyperparams") or {}, runtime, default_retries)
    verdict = retry.decide(retry.Cause.WORKER_SILENT, retry.attempt_of(runtime), limits)
    if verdict.retry and not has_queue:
        why = f"{LOST_WORKER}: its queue no longer exists"
        return Decision(Outcome.FAIL, LOST_WORKER, why, f"attempt {verdict.attempt} lost: {why}")
    outcome = Outcome.REQUEUE if verdict.retry else Outcome.FAIL
    return Decision(outcome, verdict.reason, verdict.message, verdict.console, verdict.next_attempt)


@dataclass(frozen=True)
class Rescue:
    worker: str
    task: str | None
    decision: Decision
    requeued_to: str | None = None  # the queue the task went back to


def _closing_line(conn: sqlite3.Connection, task_id: str, worker_id: str, line: str) -> None:
    """The lost attempt's last console line, after everything it printed (by timestamp)."""
    last = conn.execute(
        "SELECT MAX(timestamp) FROM events WHERE task=? AND type='log'", (task_id,)
    ).fetchone()[0]
    stamp = max(int(time.time() * 1000), int(last or 0) + 1)
    event = {
        "type": "log",
        "task": task_id,
        "worker": worker_id,
        "level": "warning",
        "msg": CONSOLE_PREFIX + line,
        "timestamp": stamp,
    }
    conn.execute(
        "INSERT INTO events (task, type, timestamp, iter, metric, variant, doc) "
        "VALUES (?, 'log', ?, NULL, NULL, NULL, ?)",
        (task_id, stamp, dumps(event)),
    )


def _rescue(
    conn: sqlite3.Connection,
    state: ServerState,
    worker_id: str,
    task_id: str | None,
    reported_queue: str | None,
) -> Rescue:
    task = find_task(conn, task_id) if task_id else None
    queue_id = (task or {}).get("execution", {}).get("queue") or reported_queue
    has_queue = bool(queue_id) and queue_ops.find_queue(conn, str(queue_id)) is not None
    decision = decide(worker_id, task, has_queue, state.config.max_retries)
    if task is None or decision.outcome is Outcome.NOTHING:
        return Rescue(worker_id, task_id, decision)
    _closing_line(conn, task["id"], worker_id, decision.console)
    if decision.outcome is Outcome.REQUEUE:
        queue_ops.remove(conn, task["id"])
        queue_ops.push(conn, str(queue_id), task["id"], front=True)
        set_status(task, QUEUED, decision.reason, decision.message)
        task["execution"] = {**task["execution"], "queue": queue_id}
        task["runtime"] = {
            **(task.get("runtime") or {}),
            retry.ATTEMPT_FIELD: decision.next_attempt,
        }
        save_task(conn, task)
        return Rescue(worker_id, task_id, decision, str(queue_id))
    set_status(task, FAILED, decision.reason, decision.message)
    save_task(conn, task)
    return Rescue(worker_id, task_id, decision)


def _silent(
    state: ServerState, now: float, since: float, last_report: float, timeout: float
) -> bool:
    """Silent past its timeout, counting only from ``since`` (the server's start): no worker
    can report to a server that is down, so an outage is never held against them."""
    return now - max(float(last_report), since) > effective_timeout(state.config, float(timeout))


def sweep(state: ServerState, now: float | None = None, since: float = 0.0) -> list[Rescue]:
    """Drop every worker silent past its timeout (since ``since``); requeue or fail its task."""
    now = time.time() if now is None else now
    rows = state.store.conn().execute("SELECT id, last_report, timeout FROM workers").fetchall()
    lost = [str(r[0]) for r in rows if _silent(state, now, since, r[1], r[2])]
    out = []
    for worker_id in lost:
        with state.store.write() as conn:
            row = conn.execute(
                "SELECT task, last_report, timeout, doc FROM workers WHERE id=?", (worker_id,)
            ).fetchone()
            if row is None or not _silent(state, now, since, row[1], row[2]):
                continue  # it reported (or left) meanwhile
            conn.execute("DELETE FROM workers WHERE id=?", (worker_id,))
            reported_queue = loads(row[3]).get("queue")
            rescue = _rescue(conn, state, worker_id, row[0], reported_queue)
            claims.release(conn, worker_id)
        log.warning(
            "worker_lost",
            worker=worker_id,
            task=rescue.task,
            outcome=rescue.decision.outcome.value,
            reason=rescue.decision.reason,
        )
        out.append(rescue)
    return out


class Watchdog:
    """Runs ``sweep`` every ``interval`` seconds in a daemon thread until ``stop``."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._stop = threading.Event()
        self._since = time.time()  # the server's start: workers are given a timeout from here
        self._thread = threading.Thread(target=self._run, name="conveyor-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        interval = self._state.config.watchdog_interval
        while not self._stop.wait(interval):
            try:
                sweep(self._state, since=self._since)
            except (sqlite3.Error, StoreError) as exc:
                # Keep watching: a locked or briefly unavailable database must not end the
                # watchdog for the life of the server; the next sweep retries.
                log.error("watchdog_sweep_failed", error=str(exc))
