"""events.* reads over stored events: debug images, single values, which metrics a task has.

Debug images are the ``training_debug_image`` events the SDK sends after uploading the image
(``url`` points at the files host). Single values are scalars reported at iteration -2**31
(``Logger.report_single_value``), as ClearML defines them. Model events are not stored by this
server: ``model_events: true`` is refused rather than answered with nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from agent.server.errors import bad_request
from agent.server.fields import INT64, opt_bool, opt_int, opt_list, opt_str, req_str
from agent.server.registry import Call, endpoint
from agent.server.store import loads
from agent.server.taskstore import load_task

IMAGE = "training_debug_image"
SCALAR = "training_stats_scalar"
SINGLE_VALUE_ITER = -(2**31)
EVENT_TYPES = ("training_stats_scalar", "training_stats_vector", IMAGE, "plot", "log")
DEFAULT_ITERS = 10
MAX_ITERS = 1000  # a larger ``iters`` is clamped, not refused


def _no_model_events(call: Call) -> None:
    if opt_bool(call.body, "model_events"):
        raise bad_request("field 'model_events': model events are not supported by this server")


def _task_ids(call: Call, conn: sqlite3.Connection) -> list[str]:
    ids = opt_list(call.body, "tasks")
    if not ids or not all(isinstance(t, str) and t for t in ids):
        raise bad_request("field 'tasks' is required and must be a list of task ids")
    for task_id in ids:
        load_task(conn, task_id)
    return list(dict.fromkeys(ids))


# --- debug images ------------------------------------------------------------------------------
def _selection(item: Any, index: int) -> tuple[str, str, list[str]]:
    """(task, metric or "", variants or []) of one ``metrics`` entry."""
    where = f"metrics[{index}]"
    if not isinstance(item, Mapping):
        raise bad_request(f"field '{where}' must be an object")
    task = req_str(item, "task")
    metric = opt_str(item, "metric")
    variants = item.get("variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise bad_request(f"field '{where}.variants' must be a list of strings")
    return task, metric, variants


def _decode_scroll(scroll: str) -> dict[str, int]:
    """The scroll state: per task, the last iteration already returned."""
    if not scroll:
        return {}
    try:
        state = json.loads(scroll)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"invalid scroll_id {scroll[:80]!r}") from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and type(v) is int and INT64[0] <= v <= INT64[1]
        for k, v in state.items()
    ):
        raise bad_request(f"invalid scroll_id {scroll[:80]!r}")
    return state


def _image_rows(
    conn: sqlite3.Connection, selection: tuple[str, str, list[str]], iterations: list[int]
) -> list[Any]:
    task, metric, variants = selection
    sql = f"SELECT doc FROM events WHERE task=? AND type=? AND iter IN ({_marks(iterations)})"
    args: list[Any] = [task, IMAGE, *iterations]
    if metric:
        sql += " AND metric=?"
        args.append(metric)
    if variants:
        sql += f" AND variant IN ({_marks(variants)})"
        args.extend(variants)
    return conn.execute(sql + " ORDER BY iter, metric, variant, seq", args).fetchall()


def _marks(values: list[Any]) -> str:
    return ",".join("?" * len(values))


def _page_iterations(
    conn: sqlite3.Connection,
    selection: tuple[str, str, list[str]],
    count: int,
    earlier: bool,
    after: int | None,
) -> list[int]:
    """The next ``count`` iterations with images, latest first when ``earlier``."""
    task, metric, variants = selection
    sql = "SELECT DISTINCT iter FROM events WHERE task=? AND type=?"
    args: list[Any] = [task, IMAGE]
    if metric:
        sql += " AND metric=?"
        args.append(metric)
    if variants:
        sql += f" AND variant IN ({_marks(variants)})"
        args.extend(variants)
    if after is not None:
        sql += " AND iter < ?" if earlier else " AND iter > ?"
        args.append(after)
    sql += f" ORDER BY iter {'DESC' if earlier else 'ASC'} LIMIT ?"
    return [int(r[0]) for r in conn.execute(sql, [*args, count]).fetchall()]


@endpoint("events.debug_images")
def debug_images(call: Call) -> dict[str, Any]:
    """Per task, the debug image events of the next ``iters`` iterations (latest first unless
    ``navigate_earlier`` is false), grouped by iteration; ``scroll_id`` pages on."""
    _no_model_events(call)
    items = opt_list(call.body, "metrics")
    if not items:
        raise bad_request("field 'metrics' is required: a list of {task, metric, variants}")
    selections = [_selection(item, i) for i, item in enumerate(items)]
    count = max(1, min(opt_int(call.body, "iters", DEFAULT_ITERS) or DEFAULT_ITERS, MAX_ITERS))
    earlier = opt_bool(call.body, "navigate_earlier", True)
    refresh = opt_bool(call.body, "refresh")
    state = {} if refresh else _decode_scroll(opt_str(call.body, "scroll_id"))
    conn = call.store.conn()
    metrics = []
    for selection in selections:
        task = selection[0]
        load_task(conn, task)
        iterations = _page_iterations(conn, selection, count, earlier, state.get(task))
        grouped: dict[int, list[Any]] = {i: [] for i in iterations}
        for row in _image_rows(conn, selection, iterations) if iterations else []:
            event = loads(row[0])
            grouped[int(event.get("iter", 0))].append(event)
        metrics.append(
            {"task": task, "iterations": [{"iter": i, "events": grouped[i]} for i in iterations]}
        )
        if iterations:
            state[task] = iterations[-1]
    return {"metrics": metrics, "scroll_id": json.dumps(state, separators=(",", ":"))}


@endpoint("events.get_debug_image_sample")
def get_debug_image_sample(call: Call) -> dict[str, Any]:
    """The image of one metric/variant at ``iteration`` (the latest if absent), with the
    variant's first and last iterations; ``event`` is null when there is none there."""
    _no_model_events(call)
    task = req_str(call.body, "task")
    metric = req_str(call.body, "metric")
    variant = req_str(call.body, "variant")
    iteration = opt_int(call.body, "iteration")
    conn = call.store.conn()
    load_task(conn, task)
    where = "task=? AND type=? AND metric=? AND variant=?"
    args: list[Any] = [task, IMAGE, metric, variant]
    low, high = conn.execute(
        f"SELECT MIN(iter), MAX(iter) FROM events WHERE {where}", args
    ).fetchone()
    wanted = high if iteration is None else iteration
    row = conn.execute(
        f"SELECT doc FROM events WHERE {where} AND iter=? ORDER BY seq DESC LIMIT 1",
        [*args, wanted],
    ).fetchone()
    scroll = json.dumps({"task": task, "metric": metric, "variant": variant, "iter": wanted})
    return {
        "event": loads(row[0]) if row else None,
        "min_iteration": low,
        "max_iteration": high,
        "scroll_id": scroll,
    }


# --- single values and metric names ----------------------------------------------------------
@endpoint("events.get_task_single_value_metrics")
def get_task_single_value_metrics(call: Call) -> dict[str, Any]:
    """Per task, the latest value of each single-value scalar (iteration -2**31)."""
    _no_model_events(call)
    conn = call.store.conn()
    out = []
    for task in _task_ids(call, conn):
        rows = conn.execute(
            "SELECT doc FROM events WHERE task=? AND type=? AND iter=? ORDER BY seq",
            (task, SCALAR, SINGLE_VALUE_ITER),
        ).fetchall()
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            event = loads(row[0])
            latest[(event["metric"], event["variant"])] = {
                "metric": event["metric"],
                "variant": event["variant"],
                "value": event["value"],
                "timestamp": event["timestamp"],
            }
        out.append({"task": task, "values": list(latest.values())})
    return {"tasks": out}


@endpoint("events.get_task_metrics")
def get_task_metrics(call: Call) -> dict[str, Any]:
    """Per task, the names of the metrics it reported (of ``event_type`` when given)."""
    _no_model_events(call)
    event_type = opt_str(call.body, "event_type")
    if event_type and event_type not in EVENT_TYPES:
        raise bad_request(f"field 'event_type' must be one of {', '.join(EVENT_TYPES)}")
    conn = call.store.conn()
    out = []
    for task in _task_ids(call, conn):
        sql = "SELECT DISTINCT metric FROM events WHERE task=? AND metric IS NOT NULL"
        args: list[Any] = [task]
        if event_type:
            sql += " AND type=?"
            args.append(event_type)
        rows = conn.execute(sql + " ORDER BY metric", args).fetchall()
        out.append({"task": task, "metrics": [r[0] for r in rows]})
    return {"metrics": out}
