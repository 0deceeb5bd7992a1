"""Task status changes: started/completed/stopped/failed/reset/stop/publish, enqueue/dequeue.

Each is one write transaction: read the task, check the transition (lifecycle), change the
document and the queue entries together, so nothing is left half-done.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from agent.server import lifecycle, queue_ops, scalar_store
from agent.server.accepts import accepts
from agent.server.errors import INVALID_TASK_STATUS, TASK_ALREADY_QUEUED, ApiError, bad_request
from agent.server.fields import opt_bool, opt_str, req_str
from agent.server.lifecycle import CREATED, IN_PROGRESS, PUBLISHED, QUEUED, STOPPED
from agent.server.models import publish_outputs
from agent.server.registry import Call, endpoint
from agent.server.state import ServerConfig
from agent.server.taskstore import load_task, save_task, set_status
from agent.server.workers import effective_timeout

STOPPING = "stopping"
_STATUS_FIELDS = ("status", "status_reason", "status_message", "status_changed")
_CHANGE = "task force status_reason status_message"
_KEPT = "this server keeps a reset task's output models and artifact files"


def _fields(doc: dict[str, Any], *extra: str) -> dict[str, Any]:
    return {k: doc.get(k) for k in (*_STATUS_FIELDS, *extra)}


def _change(call: Call, action: str, force: bool | None = None) -> dict[str, Any]:
    """The common shape: check the transition, set status/reason/message, drop queue entry."""
    task_id = req_str(call.body, "task")
    force = opt_bool(call.body, "force") if force is None else force
    reason = opt_str(call.body, "status_reason")
    message = opt_str(call.body, "status_message")
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        target = lifecycle.check(action, doc["status"], force)
        if action == "completed" and opt_bool(call.body, "publish"):
            target = PUBLISHED
        if target == PUBLISHED and opt_bool(call.body, "publish_model", True):
            publish_outputs(conn, doc)  # ClearML's default: the output models with the task
        if action == "started":
            reason, message = _start_keeps_stop(conn, doc, reason, message)
        queue_ops.remove(conn, task_id)
        queue_ops.unclaim(conn, task_id)
        set_status(doc, target, reason, message)
        if action == "started" and _registered(conn, call.worker):
            # Only a registered worker's header: clearml-agent's task process sends the
            # hostname, which would hide the worker id its daemon reported for the task.
            doc["last_worker"] = call.worker
        save_task(conn, doc)
    return {"updated": 1, "fields": _fields(doc)}


def stop_requested(doc: dict[str, Any]) -> bool:
    """Has ``tasks.stop`` asked the worker running this task to stop it?"""
    return doc["status"] == IN_PROGRESS and doc.get("status_message") == STOPPING


def _start_keeps_stop(
    conn: sqlite3.Connection, doc: dict[str, Any], reason: str, message: str
) -> tuple[str, str]:
    """(reason, message) for ``tasks.started``: a stop request stands until the task ends.

    The SDK's own ``tasks.started`` (sent by ``Task.init`` in a task an agent runs) must not
    erase a ``tasks.stop`` that landed before it; and a task stopped between its pop and its
    start (the stop took it at once) is not started, even with ``force``.
    """
    if stop_requested(doc):
        return doc.get("status_reason") or "", STOPPING
    claimed = conn.execute("SELECT 1 FROM claims WHERE task=?", (doc["id"],)).fetchone()
    if doc["status"] == STOPPED and claimed is not None:
        raise ApiError(
            400,
            INVALID_TASK_STATUS,
            f"invalid task status: task {doc['id']!r} was stopped after a worker popped it "
            "and before it started: not started",
        )
    return reason, message


def _registered(conn: sqlite3.Connection, worker: str) -> bool:
    found = conn.execute("SELECT 1 FROM workers WHERE id=?", (worker,)).fetchone()
    return bool(worker) and found is not None


@endpoint("tasks.started", inline=True, accepts=accepts(_CHANGE))
def started(call: Call) -> dict[str, Any]:
    return {**_change(call, "started"), "started": 1}


@endpoint("tasks.completed", inline=True, accepts=accepts(f"{_CHANGE} publish"))
def completed(call: Call) -> dict[str, Any]:
    return _change(call, "completed")


@endpoint("tasks.stopped", inline=True, accepts=accepts(_CHANGE))
def stopped(call: Call) -> dict[str, Any]:
    return _change(call, "stopped")


@endpoint("tasks.failed", inline=True, accepts=accepts(_CHANGE))
def failed(call: Call) -> dict[str, Any]:
    return _change(call, "failed")


@endpoint("tasks.publish", accepts=accepts(f"{_CHANGE} publish_model"))
def publish(call: Call) -> dict[str, Any]:
    return {**_change(call, "publish"), "committed_versions_results": []}


@endpoint("tasks.close", accepts=accepts(_CHANGE))
def close(call: Call) -> dict[str, Any]:
    return _change(call, "close")


# ``verify_watched_queue``: the answer always says whether a worker watches the queue.
@endpoint(
    "tasks.enqueue",
    inline=True,
    accepts=accepts("task queue queue_name status_reason status_message verify_watched_queue"),
)
def enqueue(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    queue_id = opt_str(call.body, "queue")
    queue_name = opt_str(call.body, "queue_name")
    reason = opt_str(call.body, "status_reason")
    message = opt_str(call.body, "status_message")
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        lifecycle.check("enqueue", doc["status"], force=False)
        if queue_name and not queue_id and queue_ops.find_by_name(conn, queue_name) is None:
            queue_ops.create_queue(conn, queue_name, call.user)
        queue = queue_ops.resolve(conn, queue_id, queue_name)
        current = queue_ops.queue_of(conn, task_id)
        if current is not None:
            raise ApiError(
                400, TASK_ALREADY_QUEUED, f"task {task_id!r} is already queued (queue {current!r})"
            )
        queue_ops.push(conn, queue["id"], task_id)
        set_status(doc, QUEUED, reason, message)
        doc["execution"] = {**doc["execution"], "queue": queue["id"]}
        save_task(conn, doc)
        watched = _queue_watched(conn, queue["id"])
    fields = _fields(doc) | {"execution.queue": queue["id"]}
    return {"queued": 1, "updated": 1, "fields": fields, "queue_watched": watched}


def _queue_watched(conn: sqlite3.Connection, queue_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM workers WHERE EXISTS (SELECT 1 FROM json_each(workers.doc, '$.queues') "
        "WHERE value=?) LIMIT 1",
        (queue_id,),
    ).fetchone()
    return row is not None


@endpoint(
    "tasks.dequeue",
    inline=True,
    accepts=accepts("task new_status status_reason status_message"),
)
def dequeue(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    new_status = opt_str(call.body, "new_status") or CREATED
    if new_status not in lifecycle.ALL_STATUSES:
        raise bad_request(f"field 'new_status' is not a task status: {new_status!r}")
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        removed = queue_ops.remove(conn, task_id)
        if removed is None and doc["status"] == new_status:
            # clearml-agent's task process asks to dequeue into in_progress a task its agent
            # already popped and started: nothing to do, and nothing wrong.
            return {"dequeued": 0, "updated": 0, "fields": {}}
        if removed is None and doc["status"] != QUEUED:
            raise ApiError(
                400,
                INVALID_TASK_STATUS,
                f"invalid task status: task is {doc['status']!r}, not queued",
            )
        set_status(
            doc,
            new_status,
            opt_str(call.body, "status_reason"),
            opt_str(call.body, "status_message"),
        )
        doc["execution"] = {k: v for k, v in doc["execution"].items() if k != "queue"}
        save_task(conn, doc)
    return {"dequeued": 1, "updated": 1, "fields": _fields(doc)}


@endpoint(
    "tasks.reset",
    accepts=accepts(
        _CHANGE,
        # delete_external_artifacts: sent (true) by the SDK in every reset; ClearML deletes
        # the files only "if configured to do so", and this server keeps them.
        ignored="return_file_urls delete_external_artifacts",
        off_only={
            "clear_all": "a reset keeps the script and execution sections",
            "delete_output_models": f"{_KEPT} (the task forgets them)",
        },
    ),
)
def reset(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    force = opt_bool(call.body, "force")
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        lifecycle.check("reset", doc["status"], force)
        removed = queue_ops.remove(conn, task_id)
        events = conn.execute("DELETE FROM events WHERE task=?", (task_id,)).rowcount
        scalar_store.delete_task(conn, task_id)
        set_status(
            doc, CREATED, opt_str(call.body, "status_reason"), opt_str(call.body, "status_message")
        )
        for key in ("started", "completed", "published", "last_worker_report"):
            doc.pop(key, None)
        doc.update(last_iteration=0, last_metrics={}, last_worker="")
        doc["execution"] = {k: v for k, v in doc["execution"].items() if k != "queue"}
        doc["models"] = {**doc["models"], "output": []}
        # A reset task starts over: its attempt counter too (agent/retry.py).
        runtime = doc.get("runtime") or {}
        doc["runtime"] = {k: v for k, v in runtime.items() if not k.startswith("conveyor_")}
        save_task(conn, doc)
        conn.execute("UPDATE tasks SET requeues=0 WHERE id=?", (task_id,))
    return {
        "updated": 1,
        "fields": _fields(doc),
        "dequeued": {"removed": 1 if removed else 0},
        "events": {"deleted": events},
        "deleted_models": 0,
        "urls": {},
    }


def worker_active(conn: sqlite3.Connection, doc: dict[str, Any], config: ServerConfig) -> bool:
    """Has a live worker reported on this task within its timeout?"""
    row = conn.execute(
        "SELECT last_report, timeout FROM workers WHERE task=? OR id=? "
        "ORDER BY last_report DESC LIMIT 1",
        (doc["id"], doc.get("last_worker") or ""),
    ).fetchone()
    if row is None:
        return False
    return time.time() - float(row[0]) <= effective_timeout(config, float(row[1]))


@endpoint("tasks.stop", inline=True, accepts=accepts(_CHANGE))
def stop(call: Call) -> dict[str, Any]:
    """Ask for a stop: a task a worker is running gets status_message "stopping" (the worker
    stops it and reports ``stopped``); a task nobody runs is stopped right away."""
    task_id = req_str(call.body, "task")
    force = opt_bool(call.body, "force")
    reason = opt_str(call.body, "status_reason") or "stopped by user"
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        status = doc["status"]
        if status not in (IN_PROGRESS, QUEUED, CREATED) and not (
            force and status not in lifecycle.IMMUTABLE
        ):
            raise ApiError(
                400, INVALID_TASK_STATUS, f"invalid task status: cannot stop a {status!r} task"
            )
        if status == IN_PROGRESS and worker_active(conn, doc, call.state.config):
            doc["status_message"] = STOPPING
            doc["status_reason"] = reason
        else:
            queue_ops.remove(conn, task_id)
            set_status(doc, STOPPED, reason, opt_str(call.body, "status_message"))
        save_task(conn, doc)
    return {"updated": 1, "fields": _fields(doc)}
