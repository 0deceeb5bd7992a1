"""Tasks popped but not started: a worker that goes away between ``queues.get_next_task`` and
``tasks.started`` (killed, restarted, dropped by the watchdog) must not take the task with it.

``get_next_task`` records a claim (task, queue, the X-ClearML-Worker of the request); starting
the task, or any later status change, removes it. When a worker is gone — the watchdog drops
it, it unregisters, or it registers anew (a new process under the same id knows nothing of the
old one's pops) — every task it claimed that is still ``queued`` and in no queue goes back to
the front of its queue. A live worker's claim is never touched: no timer, so a slow start is
never run twice. A pop by a client that is not a registered worker (clearml-agent sends its
hostname) leaves a claim no worker event releases.
"""

from __future__ import annotations

import sqlite3

import structlog

from agent.server import queue_ops
from agent.server.lifecycle import QUEUED
from agent.server.taskstore import find_task, save_task, set_status

log = structlog.get_logger()

NEVER_STARTED = "claimed by a worker that went away before starting it: requeued"


def release(conn: sqlite3.Connection, worker: str) -> None:
    """Requeue (at the front) what ``worker`` popped and never started."""
    for task_id, queue_id in queue_ops.claims_of(conn, worker):
        task = find_task(conn, task_id)
        if task is None or task["status"] != QUEUED or queue_ops.queue_of(conn, task_id):
            continue  # started, stopped, deleted or queued again meanwhile: nothing lost
        if queue_ops.find_queue(conn, queue_id) is None:
            continue  # its queue was deleted: it stays as the deletion left it
        queue_ops.push(conn, queue_id, task_id, front=True)
        set_status(task, QUEUED, NEVER_STARTED)
        save_task(conn, task)
        log.warning("claim_released", task=task_id, worker=worker, queue=queue_id)
