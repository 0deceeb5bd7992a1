"""queues.*: FIFO queues of task ids; ``get_next_task`` pops the head atomically.

``queues.wait_for_entries`` is Conveyor's own (not in ClearML's API): a long poll for idle
agents, answered as soon as one of the given queues has an entry, or after ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Any

from agent.server import queue_ops
from agent.server.accepts import accepts
from agent.server.documents import project_fields
from agent.server.errors import QUEUE_NOT_EMPTY, ApiError, bad_request
from agent.server.fields import (
    opt_bool,
    opt_float,
    opt_int,
    opt_str_list,
    req_str,
)
from agent.server.listing import ListSpec, keep, order_and_page, parse_query
from agent.server.registry import Call, endpoint, waiting_endpoint
from agent.server.store import loads
from agent.server.taskstore import find_task, save_task, set_status

_SPEC = ListSpec("queues.get_all", handled=frozenset({"max_task_entries"}))
_MOVE = accepts("queue task count")
_MOVE_END = accepts("queue task")


@endpoint("queues.get_all")
def get_all(call: Call) -> dict[str, Any]:
    query = parse_query(call.body, _SPEC)
    max_entries = opt_int(call.body, "max_task_entries")
    if max_entries is not None and max_entries < 0:
        raise bad_request("field 'max_task_entries' must be >= 0")
    with call.store.read() as conn:
        sql, args = "SELECT doc FROM queues WHERE 1=1", []
        if query.name:
            sql += " AND name REGEXP ?"
            args.append(query.name)
        if query.ids:
            sql += f" AND id IN ({','.join('?' * len(query.ids))})"
            args.extend(query.ids)
        sql += " ORDER BY created"
        docs = [d for d in (loads(r[0]) for r in conn.execute(sql, args)) if keep(d, query)]
        docs = order_and_page(docs, query)
        if query.only_fields is None or any(
            f.split(".")[0] == "entries" for f in query.only_fields
        ):
            docs = [queue_ops.with_entries(conn, d) for d in docs]
    if max_entries is not None:
        docs = [{**d, "entries": d["entries"][:max_entries]} if "entries" in d else d for d in docs]
    return {"queues": [project_fields(d, query.only_fields) for d in docs]}


@endpoint("queues.get_by_id")
def get_by_id(call: Call) -> dict[str, Any]:
    queue_id = req_str(call.body, "queue")
    with call.store.read() as conn:
        return {"queue": queue_ops.with_entries(conn, queue_ops.load_queue(conn, queue_id))}


@endpoint("queues.create", accepts=accepts("name tags system_tags"))
def create(call: Call) -> dict[str, Any]:
    name = req_str(call.body, "name")
    tags = opt_str_list(call.body, "tags")
    system_tags = opt_str_list(call.body, "system_tags")
    with call.store.write() as conn:
        doc = queue_ops.create_queue(conn, name, call.user, tags, system_tags)
    return {"id": doc["id"]}


@endpoint("queues.update", accepts=accepts("queue name tags system_tags"))
def update(call: Call) -> dict[str, Any]:
    queue_id = req_str(call.body, "queue")
    changes: dict[str, Any] = {}
    if call.body.get("name") is not None:
        changes["name"] = req_str(call.body, "name")
    for key in ("tags", "system_tags"):
        value = opt_str_list(call.body, key)
        if value is not None:
            changes[key] = value
    with call.store.write() as conn:
        doc = queue_ops.load_queue(conn, queue_id)
        other = queue_ops.find_by_name(conn, changes.get("name", doc["name"]))
        if other is not None and other["id"] != queue_id:
            raise bad_request(f"a queue named {changes['name']!r} already exists")
        doc.update(changes)
        queue_ops.save_queue(conn, doc)
    return {"updated": 1, "fields": changes}


@endpoint("queues.get_default", inline=True)
def get_default(call: Call) -> dict[str, Any]:
    queue = queue_ops.load_default(call.store.conn())
    return {"id": queue["id"], "name": queue["name"]}


@endpoint("queues.get_next_task", inline=True)
def get_next_task(call: Call) -> dict[str, Any]:
    queue_id = req_str(call.body, "queue")
    task_info = opt_bool(call.body, "get_task_info")
    with call.store.write() as conn:
        queue_ops.load_queue(conn, queue_id)
        head = queue_ops.pop(conn, queue_id)
        if head is not None and call.worker:
            queue_ops.claim(conn, head[0], queue_id, call.worker)
    if head is None:
        return {}
    task, added = head
    out: dict[str, Any] = {"entry": {"task": task, "added": added}}
    if task_info:
        row = call.store.conn().execute("SELECT doc FROM tasks WHERE id=?", (task,)).fetchone()
        user = loads(row[0]).get("user", "") if row else ""
        out["task_info"] = {"company": "conveyor", "user": user}
    return out


MAX_WAIT_S = 60.0  # a long poll's longest wait (clients time out their reads after it)


@waiting_endpoint("queues.wait_for_entries")
async def wait_for_entries(call: Call) -> dict[str, Any]:
    """``{"queues": [ids], "timeout": s}`` → ``{"queues": [the ids that have entries]}``."""
    queue_ids = opt_str_list(call.body, "queues")
    if not queue_ids:
        raise bad_request("field 'queues' must be a non-empty list of queue ids")
    timeout = min(max(opt_float(call.body, "timeout", 0.0) or 0.0, 0.0), MAX_WAIT_S)
    with call.state.queue_waiters.watch(set(queue_ids)) as pushed:  # before the first look
        found = _with_entries(call, queue_ids)
        if not found and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pushed.wait(), timeout)
            found = _with_entries(call, queue_ids)
    return {"queues": found}


def _with_entries(call: Call, queue_ids: list[str]) -> list[str]:
    with call.store.read() as conn:
        for queue_id in queue_ids:
            queue_ops.load_queue(conn, queue_id)  # an unknown queue is the caller's error
        return [q for q in queue_ids if queue_ops.count(conn, q)]


@endpoint("queues.remove_task", accepts=accepts("queue task"))
def remove_task(call: Call) -> dict[str, Any]:
    queue_id = req_str(call.body, "queue")
    task_id = req_str(call.body, "task")
    with call.store.write() as conn:
        queue_ops.load_queue(conn, queue_id)
        if queue_ops.queue_of(conn, task_id) != queue_id:
            return {"removed": 0}
        queue_ops.remove(conn, task_id)
        task = find_task(conn, task_id)
        if task is not None and task["status"] == "queued":
            set_status(task, "created", "removed from queue")
            task["execution"].pop("queue", None)
            save_task(conn, task)
    return {"removed": 1}


def _move(call: Call, where: str) -> dict[str, Any]:
    queue_id = req_str(call.body, "queue")
    task_id = req_str(call.body, "task")
    count = opt_int(call.body, "count", 1) or 1
    with call.store.write() as conn:
        queue_ops.load_queue(conn, queue_id)
        size = queue_ops.count(conn, queue_id)
        offsets = {"front": -size, "back": size, "forward": -count, "backward": count}
        position = queue_ops.reorder(conn, queue_id, task_id, offsets[where])
    return {"position": position}


@endpoint("queues.move_task_to_front", accepts=_MOVE_END)
def move_task_to_front(call: Call) -> dict[str, Any]:
    return _move(call, "front")


@endpoint("queues.move_task_to_back", accepts=_MOVE_END)
def move_task_to_back(call: Call) -> dict[str, Any]:
    return _move(call, "back")


@endpoint("queues.move_task_forward", accepts=_MOVE)
def move_task_forward(call: Call) -> dict[str, Any]:
    return _move(call, "forward")


@endpoint("queues.move_task_backward", accepts=_MOVE)
def move_task_backward(call: Call) -> dict[str, Any]:
    return _move(call, "backward")


@endpoint("queues.get_num_entries", inline=True)
def get_num_entries(call: Call) -> dict[str, Any]:
    queue_id = req_str(call.body, "queue")
    with call.store.read() as conn:
        queue_ops.load_queue(conn, queue_id)
        return {"num": queue_ops.count(conn, queue_id)}


@endpoint("queues.delete", accepts=accepts("queue force"))
def delete(call: Call) -> dict[str, Any]:
    queue_id = req_str(call.body, "queue")
    force = opt_bool(call.body, "force")
    with call.store.write() as conn:
        queue_ops.load_queue(conn, queue_id)
        if queue_ops.count(conn, queue_id) and not force:
            raise ApiError(400, QUEUE_NOT_EMPTY, "queue is not empty (pass force=true to delete)")
        conn.execute("DELETE FROM queue_entries WHERE queue=?", (queue_id,))
        conn.execute("DELETE FROM queues WHERE id=?", (queue_id,))
    return {"deleted": 1}


@endpoint("queues.get_queue_metrics")
def get_queue_metrics(call: Call) -> dict[str, Any]:
    """Each queue's length and its entries' mean wait (s), sampled now: no history is kept,
    so a series holds one point when now is within ``from_date``..``to_date``, else none."""
    wanted = opt_str_list(call.body, "queue_ids")
    start, end = opt_float(call.body, "from_date"), opt_float(call.body, "to_date")
    now = time.time()
    sampled = (start is None or start <= now) and (end is None or now <= end)
    conn = call.store.conn()
    if wanted is None:
        wanted = [str(r[0]) for r in conn.execute("SELECT id FROM queues ORDER BY name")]
    out = []
    for queue_id in wanted:
        queue_ops.load_queue(conn, queue_id)
        waits = [
            now - datetime.fromisoformat(e["added"]).timestamp()
            for e in queue_ops.entries(conn, queue_id)
        ]
        series: dict[str, Any] = {"queue": queue_id, "dates": [], "avg_waiting_times": []}
        series["queue_lengths"] = []
        if sampled:
            series["dates"] = [int(now)]
            series["avg_waiting_times"] = [sum(waits) / len(waits) if waits else 0.0]
            series["queue_lengths"] = [len(waits)]
        out.append(series)
    return {"queues": out}
