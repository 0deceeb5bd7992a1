"""events.*: console log lines and metrics reported by tasks (debug images, single values and
metric names are read in ``event_reads``).

``add_batch`` validates the whole batch before storing any of it. Log reads page by timestamp
(``navigate_earlier`` + ``from_timestamp``); other reads page with an opaque ``scroll_id``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from agent.server import scalar_store
from agent.server.accepts import Accepts, accepts, check
from agent.server.errors import bad_request
from agent.server.fields import INT64, opt_bool, opt_int, opt_list, opt_str, req_str
from agent.server.registry import Call, endpoint
from agent.server.store import dumps, loads
from agent.server.taskstore import load_task, save_task

LOG = "log"
SCALAR = scalar_store.SCALAR
PLOT = "plot"
DEFAULT_BATCH = 500
MAX_BATCH = 10_000
MAX_SAMPLES = 5000
_TRANSPORT_KEYS = frozenset({"method"})  # the SDK's request plumbing, not part of the event
# The fields of each event type ClearML defines, all stored as sent. Besides them an event
# (an ``events.add`` request) may carry ``allow_locked`` (ignored: events are never refused
# for a task's status here) and ``model_event`` (the SDK sends false in every event; a model's
# events are not stored). ``skip_validation``: plots are never validated here.
_BASE = "task type timestamp iter metric variant"
_NOT_STORED = _TRANSPORT_KEYS | {"model_event", "allow_locked"}
_TYPES = {
    LOG: "level msg worker",
    SCALAR: "value",
    "training_stats_vector": "values",
    "training_debug_image": "key url",
    PLOT: "plot_str skip_validation",
}
EVENT_FIELDS: dict[str, Accepts] = {
    kind: accepts(
        f"{_BASE} {fields}",
        ignored="allow_locked",
        off_only={"model_event": "model events are not supported by this server"},
    )
    for kind, fields in _TYPES.items()
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _number(event: Mapping[str, Any], key: str, index: int, kind: type) -> Any:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"event {index}: field '{key}' must be a number")
    number = kind(value)
    if kind is int and not INT64[0] <= number <= INT64[1]:
        raise bad_request(f"event {index}: field '{key}' is out of range (a 64-bit integer)")
    return number


def _check_event(event: Any, index: int, endpoint: str) -> dict[str, Any]:
    """A stored event: typed and with its timestamp in ms; raises 400 naming the event."""
    if not isinstance(event, dict):
        raise bad_request(f"event {index}: must be an object")
    for key in ("task", "type"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise bad_request(f"event {index}: field '{key}' is required and must be a string")
    spec = EVENT_FIELDS.get(event["type"])
    if spec is None:
        raise bad_request(
            f"event {index}: field 'type' {event['type'][:80]!r} is not an event type "
            f"({', '.join(sorted(EVENT_FIELDS))})"
        )
    check(f"{endpoint} ({event['type']} event {index})", event, spec)
    out = {k: v for k, v in event.items() if k not in _NOT_STORED}
    out["timestamp"] = _number(event, "timestamp", index, int) or _now_ms()
    iteration = _number(event, "iter", index, int)
    if iteration is not None:
        out["iter"] = iteration
    for key in ("metric", "variant", "msg", "level", "worker"):
        if event.get(key) is not None and not isinstance(event[key], str):
            raise bad_request(f"event {index}: field '{key}' must be a string")
    if out["type"] == SCALAR:
        if _number(event, "value", index, float) is None:
            raise bad_request(f"event {index}: a scalar needs a numeric 'value'")
        out.setdefault("metric", "")
        out.setdefault("variant", "")
    return out


_BATCH_BODY = accepts("requests")


def _batch(call: Call) -> list[Any]:
    if call.raw_lines:
        return list(call.raw_lines)
    requests = opt_list(call.body, "requests")
    if requests is None:
        return [dict(call.body)] if call.body else []
    check(call.endpoint, call.body, _BATCH_BODY)
    return requests


def _update_metrics(doc: dict[str, Any], scalars: Iterable[dict[str, Any]]) -> None:
    metrics: dict[str, Any] = doc["last_metrics"]
    for event in scalars:
        metric_key = hashlib.md5(event["metric"].encode()).hexdigest()
        variant_key = hashlib.md5(event["variant"].encode()).hexdigest()
        value = float(event["value"])
        old = metrics.setdefault(metric_key, {}).get(variant_key)
        metrics[metric_key][variant_key] = {
            "metric": event["metric"],
            "variant": event["variant"],
            "value": value,
            "min_value": min(value, old["min_value"]) if old else value,
            "max_value": max(value, old["max_value"]) if old else value,
            "iter": event.get("iter", 0),
            "timestamp": event["timestamp"],
        }
        doc["last_iteration"] = max(int(doc.get("last_iteration") or 0), event.get("iter", 0))


def _log_key(event: Mapping[str, Any]) -> tuple[Any, ...]:
    return (event["timestamp"], event.get("worker"), event.get("level"), event.get("msg"))


def _not_stored(conn: sqlite3.Connection, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave out log events stored already: a batch sent again because its answer was lost
    (the server killed after its commit) must not double a task's lines. The agent stamps
    every event of a task with its own millisecond, so task, timestamp, worker, level and
    text identify one."""
    out: list[tuple[Any, ...]] = []
    for task_id in {e["task"] for e in events if e["type"] == LOG}:
        stamps = [e["timestamp"] for e in events if e["task"] == task_id and e["type"] == LOG]
        rows = conn.execute(
            "SELECT doc FROM events WHERE task=? AND type=? AND timestamp BETWEEN ? AND ?",
            (task_id, LOG, min(stamps), max(stamps)),
        )
        out.extend(_log_key(loads(row[0])) for row in rows)
    stored = set(out)
    return [e for e in events if e["type"] != LOG or _log_key(e) not in stored]


def _store(conn: sqlite3.Connection, events: list[dict[str, Any]]) -> None:
    events = _not_stored(conn, events)
    tasks = {e["task"] for e in events}
    docs = {task_id: load_task(conn, task_id) for task_id in sorted(tasks)}
    conn.executemany(
        "INSERT INTO events (task, type, timestamp, iter, metric, variant, doc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e["task"],
                e["type"],
                e["timestamp"],
                e.get("iter"),
                e.get("metric"),
                e.get("variant"),
                dumps(e),
            )
            for e in events
        ],
    )
    scalar_store.append(conn, events)
    for task_id, doc in docs.items():
        _update_metrics(doc, (e for e in events if e["task"] == task_id and e["type"] == SCALAR))
        save_task(conn, doc)


@endpoint("events.add_batch")
def add_batch(call: Call) -> dict[str, Any]:
    events = [_check_event(e, i, call.endpoint) for i, e in enumerate(_batch(call))]
    if events:
        with call.store.write() as conn:
            _store(conn, events)
    return {"added": len(events), "errors": 0, "errors_info": {}}


@endpoint("events.add")
def add(call: Call) -> dict[str, Any]:
    event = _check_event(dict(call.body), 0, call.endpoint)
    with call.store.write() as conn:
        _store(conn, [event])
    return {"added": 1}


@endpoint("events.get_task_log")
def get_task_log(call: Call) -> dict[str, Any]:
    """The latest (``navigate_earlier``) or earliest ``batch_size`` log events before/after
    ``from_timestamp``; ascending unless ``order`` says otherwise."""
    task_id = req_str(call.body, "task")
    size = _batch_size(call)
    earlier = opt_bool(call.body, "navigate_earlier", True)
    order = opt_str(call.body, "order") or ("desc" if earlier else "asc")
    start = opt_int(call.body, "from_timestamp")
    conn = call.store.conn()
    load_task(conn, task_id)
    sql = "SELECT doc FROM events WHERE task=? AND type=?"
    args: list[Any] = [task_id, LOG]
    if start is not None:
        sql += " AND timestamp < ?" if earlier else " AND timestamp > ?"
        args.append(start)
    direction = "DESC" if earlier else "ASC"
    sql += f" ORDER BY timestamp {direction}, seq {direction} LIMIT ?"
    rows = conn.execute(sql, [*args, size]).fetchall()
    events = [loads(r[0]) for r in rows]
    if (order == "asc") == earlier:
        events.reverse()
    total = conn.execute(
        "SELECT COUNT(*) FROM events WHERE task=? AND type=?", (task_id, LOG)
    ).fetchone()[0]
    return {"events": events, "returned": len(events), "total": int(total)}


def _batch_size(call: Call) -> int:
    """A batch of at most ``MAX_BATCH``: a bigger ``batch_size`` is clamped, never refused."""
    size = opt_int(call.body, "batch_size", DEFAULT_BATCH)
    if size is None or size < 1:
        raise bad_request("field 'batch_size' must be >= 1")
    return min(size, MAX_BATCH)


def _scroll(call: Call) -> int:
    scroll = opt_str(call.body, "scroll_id")
    if not scroll:
        return 0
    try:
        seq = int(scroll)
    except ValueError as exc:
        raise bad_request(f"invalid scroll_id {scroll[:80]!r}") from exc
    if not 0 <= seq <= INT64[1]:
        raise bad_request(f"invalid scroll_id {scroll[:80]!r}")
    return seq


@endpoint("events.get_task_events")
def get_task_events(call: Call) -> dict[str, Any]:
    """Events of a task in storage order, paged with ``scroll_id``."""
    task_id = req_str(call.body, "task")
    size = _batch_size(call)
    event_type = opt_str(call.body, "event_type")
    descending = opt_str(call.body, "order") == "desc"
    after = _scroll(call)
    conn = call.store.conn()
    load_task(conn, task_id)
    where = "task=?"
    args: list[Any] = [task_id]
    if event_type:
        where += " AND type=?"
        args.append(event_type)
    total = conn.execute(f"SELECT COUNT(*) FROM events WHERE {where}", args).fetchone()[0]
    if after:
        where += " AND seq < ?" if descending else " AND seq > ?"
        args.append(after)
    direction = "DESC" if descending else "ASC"
    rows = conn.execute(
        f"SELECT seq, doc FROM events WHERE {where} ORDER BY seq {direction} LIMIT ?",
        [*args, size],
    ).fetchall()
    events = [loads(r[1]) for r in rows]
    scroll_id = str(rows[-1][0]) if rows else (str(after) if after else None)
    return {"events": events, "returned": len(events), "total": int(total), "scroll_id": scroll_id}


@endpoint("events.get_scalar_metrics_and_variants")
def get_scalar_metrics_and_variants(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    conn = call.store.conn()
    load_task(conn, task_id)
    rows = conn.execute(
        "SELECT DISTINCT metric, variant FROM events WHERE task=? AND type=?", (task_id, SCALAR)
    ).fetchall()
    metrics: dict[str, dict[str, Any]] = {}
    for metric, variant in rows:
        metrics.setdefault(metric, {})[variant] = {"name": variant}
    return {"metrics": metrics}


def _x_value(key: str, event: Mapping[str, Any]) -> Any:
    if key == "timestamp":
        return event["timestamp"]
    if key == "iso_time":
        stamp = datetime.fromtimestamp(event["timestamp"] / 1000, UTC)
        return stamp.isoformat(timespec="milliseconds")
    return event.get("iter", 0)


@endpoint("events.scalar_metrics_iter_histogram")
def scalar_metrics_iter_histogram(call: Call) -> dict[str, Any]:
    """{metric: {variant: {name, x, y}}}; with ``samples``, every n-th point is kept."""
    task_id = req_str(call.body, "task")
    key = opt_str(call.body, "key") or "iter"
    if key not in ("iter", "timestamp", "iso_time"):
        raise bad_request("field 'key' must be iter, timestamp or iso_time")
    samples = min(opt_int(call.body, "samples", MAX_SAMPLES) or MAX_SAMPLES, MAX_SAMPLES)
    conn = call.store.conn()
    load_task(conn, task_id)
    rows = conn.execute(
        "SELECT doc FROM events WHERE task=? AND type=? ORDER BY iter, timestamp, seq",
        (task_id, SCALAR),
    ).fetchall()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        event = loads(row[0])
        series = out.setdefault(event["metric"], {}).setdefault(
            event["variant"], {"name": event["variant"], "x": [], "y": []}
        )
        series["x"].append(_x_value(key, event))
        series["y"].append(event["value"])
    for variants in out.values():
        for series in variants.values():
            step = -(-len(series["x"]) // samples)
            if step > 1:
                series["x"], series["y"] = series["x"][::step], series["y"][::step]
    return out


@endpoint("events.get_task_plots")
def get_task_plots(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    conn = call.store.conn()
    load_task(conn, task_id)
    iters = opt_int(call.body, "iters")  # the plots of the latest ``iters`` iterations
    rows = conn.execute(
        "SELECT doc FROM events WHERE task=? AND type=? ORDER BY seq", (task_id, PLOT)
    ).fetchall()
    plots = [loads(r[0]) for r in rows]
    if iters is not None and iters > 0:
        latest = sorted({p.get("iter", 0) for p in plots})[-iters:]
        plots = [p for p in plots if p.get("iter", 0) in latest]
    return {"plots": plots, "returned": len(plots), "total": len(plots), "scroll_id": None}


# ``allow_locked``: events are never locked by a task's status here.
@endpoint("events.delete_for_task", accepts=accepts("task", ignored="allow_locked"))
def delete_for_task(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    with call.store.write() as conn:
        load_task(conn, task_id)
        deleted = conn.execute("DELETE FROM events WHERE task=?", (task_id,)).rowcount
        scalar_store.delete_task(conn, task_id)
    return {"deleted": deleted}
