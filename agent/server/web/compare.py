"""Compare 2 to 200 tasks: hyperparameters and configuration side by side (differences marked),
requirements and uncommitted diffs (with a line diff against the first task), each metric's
last / min / max per task, and each metric's scalars overlaid (one series per task)."""

from __future__ import annotations

import difflib
import sqlite3
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.server.state import ServerState
from agent.server.taskstore import find_task
from agent.server.web import scalars
from agent.server.web.render import base_context, login_redirect, page, session_of

MAX_TASKS = 200
MAX_DIFF_LINES = 2_000  # per task compared with the first
LINE_DIFFED = ("uncommitted diff", "requirements (pip)")


def _rows(docs: list[dict[str, Any]], cells: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """One row per key: each task's value, and whether they differ."""
    rows = []
    for key in sorted(cells):
        values = [cells[key].get(d["id"]) for d in docs]
        rows.append({"key": key, "values": values, "differs": len(set(values)) > 1})
    return rows


def _setup(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    script = doc["script"]
    return [
        ("repository", script.get("repository")),
        ("commit", script.get("version_num")),
        ("entry point", script.get("entry_point")),
        ("docker image", doc["container"].get("image")),
        ("uncommitted diff", script.get("diff")),
        ("requirements (pip)", (script.get("requirements") or {}).get("pip")),
    ]


def line_diff(first: str, other: str) -> tuple[list[tuple[str, str]], int, int]:
    """(class, line) of a unified diff from ``first`` to ``other`` (class add, del, hunk or
    empty), at most ``MAX_DIFF_LINES`` lines, and the lines added and removed."""
    out: list[tuple[str, str]] = []
    added = removed = 0
    lines = difflib.unified_diff(first.splitlines(), other.splitlines(), lineterm="", n=2)
    for line in lines:
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "")
        added += kind == "add"
        removed += kind == "del"
        if len(out) < MAX_DIFF_LINES:
            out.append((kind, line))
    return out, added, removed


def _line_diffs(docs: list[dict[str, Any]], setup: dict[str, dict[str, str]]) -> list[Any]:
    """For each of the requirements and the uncommitted diff that differ: every other task's
    line diff against the first task."""
    found = []
    for key in LINE_DIFFED:
        values = [setup.get(key, {}).get(d["id"], "") for d in docs]
        if len(set(values)) < 2:
            continue
        pairs = []
        for doc, value in zip(docs[1:], values[1:], strict=True):
            lines, added, removed = line_diff(values[0], value)
            pairs.append({"task": doc, "lines": lines, "added": added, "removed": removed})
        found.append({"key": key, "pairs": pairs})
    return found


def metric_list(docs: list[dict[str, Any]]) -> list[str]:
    """Every metric any of the tasks reported."""
    return sorted({m for doc in docs for m, _ in scalars.metric_names(doc)})


def comparison(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The compare page's tables for these task documents (pure)."""
    params: dict[str, dict[str, str]] = {}
    configs: dict[str, dict[str, str]] = {}
    setup: dict[str, dict[str, str]] = {}
    metrics: dict[str, dict[str, str]] = {}
    for doc in docs:
        for section, items in doc["hyperparams"].items():
            for name, item in items.items():
                params.setdefault(f"{section}/{name}", {})[doc["id"]] = str(item.get("value", ""))
        for name, item in doc["configuration"].items():
            configs.setdefault(name, {})[doc["id"]] = str(item.get("value", ""))
        for key, value in _setup(doc):
            setup.setdefault(key, {})[doc["id"]] = str(value or "")
        for variants in (doc.get("last_metrics") or {}).values():
            for item in variants.values():
                key = f"{item.get('metric', '')} / {item.get('variant', '')}"
                metrics.setdefault(key, {})[doc["id"]] = (
                    f"{item.get('value', 0):.6g} (min {item.get('min_value', 0):.6g}, "
                    f"max {item.get('max_value', 0):.6g})"
                )
    return {
        "params": _rows(docs, params),
        "configs": _rows(docs, configs),
        "setup": _rows(docs, setup),
        "metrics": _rows(docs, metrics),
        "line_diffs": _line_diffs(docs, setup),
        "chart_metrics": metric_list(docs),
    }


def _load(conn: sqlite3.Connection, ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    docs, missing = [], []
    for task_id in ids:
        doc = find_task(conn, task_id)
        if doc is None:
            missing.append(task_id)
        else:
            docs.append(doc)
    return docs, missing


def _ids(request: Request) -> list[str]:
    return list(dict.fromkeys(
        i for value in request.query_params.getlist("ids") for i in value.split(",") if i
    ))  # fmt: skip


def _overlaid(conn: sqlite3.Connection, ids: list[str], request: Request) -> list[Any]:
    """One metric of every task, M4-reduced as on the task page; a series per (task, variant)
    named after the task."""
    query = request.query_params
    metric, width = query.get("metric", ""), _number(query.get("width"), int) or 800
    x0, x1 = _number(query.get("xmin"), float), _number(query.get("xmax"), float)
    out = []
    docs, _ = _load(conn, ids)
    for doc in docs:
        found = scalars.series(
            conn, doc["id"], metric, width=int(width), x_axis=query.get("x", "iter"), x0=x0, x1=x1
        )
        for item in found:
            label = doc["name"] if len(found) == 1 else f"{doc['name']} · {item['variant']}"
            out.append({**item, "variant": label, "task": doc["id"]})
    return out


def _number(text: str | None, kind: type) -> Any:
    try:
        return kind(text) if text else None
    except ValueError:
        return None


async def compare_scalars(state: ServerState, request: Request) -> Response:
    """``/compare/scalars.json?ids=...&metric=M&width=W[&x=time][&xmin=A&xmax=B]``."""
    if session_of(state, request) is None:
        return JSONResponse({"error": "not logged in"}, status_code=401)
    ids = _ids(request)[:MAX_TASKS]

    def load() -> list[Any]:
        with state.store.read() as conn:
            return _overlaid(conn, ids, request)

    found = await run_in_threadpool(load)
    x_axis = "time" if request.query_params.get("x") == "time" else "iter"
    reply = {"metric": request.query_params.get("metric", ""), "x": x_axis, "series": found}
    return JSONResponse(reply, headers={"Cache-Control": "no-store"})


async def compare_page(state: ServerState, request: Request) -> Response:
    session = session_of(state, request)
    if session is None:
        return login_redirect(request)
    ids = _ids(request)
    if not 2 <= len(ids) <= MAX_TASKS:
        text = f"choose 2 to {MAX_TASKS} tasks to compare (got {len(ids)})"
        return page("message.html", base_context(state, request, session, text=text), 400)
    docs, missing = await run_in_threadpool(_load, state.store.conn(), ids)
    tables = comparison(docs)
    ids_text = ",".join(d["id"] for d in docs)
    context = base_context(
        state, request, session, tasks=docs, missing=missing, ids=ids_text, **tables
    )
    return page("compare.html", context)
