"""Compare 2 to 200 tasks: hyperparameters and configuration side by side (differences marked),
requirements and uncommitted diffs, and each metric's last / min / max per task."""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from agent.server.state import ServerState
from agent.server.taskstore import find_task
from agent.server.web.render import base_context, login_redirect, page, session_of

MAX_TASKS = 200


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


async def compare_page(state: ServerState, request: Request) -> Response:
    session = session_of(state, request)
    if session is None:
        return login_redirect(request)
    ids = list(dict.fromkeys(
        i for value in request.query_params.getlist("ids") for i in value.split(",") if i
    ))  # fmt: skip
    if not 2 <= len(ids) <= MAX_TASKS:
        text = f"choose 2 to {MAX_TASKS} tasks to compare (got {len(ids)})"
        return page("message.html", base_context(state, request, session, text=text), 400)
    docs, missing = await run_in_threadpool(_load, state.store.conn(), ids)
    tables = comparison(docs)
    context = base_context(state, request, session, tasks=docs, missing=missing, **tables)
    return page("compare.html", context)
