"""Queues, workers and models pages: read through the REST API's own list handlers, and queue
entries moved or removed through its queue handlers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from agent.server.errors import ApiError
from agent.server.state import ServerState
from agent.server.web.render import (
    base_context,
    call_api,
    check_post,
    forbidden,
    login_redirect,
    page,
    session_of,
)
from agent.server.web.session import Session
from agent.server.web.tasks_list import names

ENTRIES_SHOWN = 200
MODELS_SHOWN = 500
QUEUE_ACTIONS = {
    "front": "queues.move_task_to_front",
    "back": "queues.move_task_to_back",
    "remove": "queues.remove_task",
}


def _task_names(state: ServerState, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    conn = state.store.conn()
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT id, name FROM tasks WHERE id IN ({marks})", ids)
    return {str(r[0]): str(r[1]) for r in rows}


def _fleet(state: ServerState, session: Session) -> dict[str, Any]:
    queues = call_api(state, session, "queues.get_all", {})["queues"]
    workers = call_api(state, session, "workers.get_all", {})["workers"]
    shown = [e["task"] for q in queues for e in (q.get("entries") or [])[:ENTRIES_SHOWN]]
    history = {str(w["id"]): state.machine_history.series(str(w["id"])) for w in workers}
    return {"queues": queues, "workers": workers, "task_names": _task_names(state, shown),
            "entries_shown": ENTRIES_SHOWN, "history": history}  # fmt: skip


async def queues_page(state: ServerState, request: Request) -> Response:
    session = session_of(state, request)
    if session is None:
        return login_redirect(request)
    found = await run_in_threadpool(_fleet, state, session)
    messages = {"msg": request.query_params.get("msg", ""),
                "error": request.query_params.get("error", "")}  # fmt: skip
    return page("queues.html", base_context(state, request, session, **found, **messages))


async def queue_action(state: ServerState, request: Request) -> Response:
    session, form, refused = await check_post(state, request)
    if session is None:
        return login_redirect(request)
    if refused:
        return forbidden(refused)
    action = request.path_params["action"]
    body = {"queue": request.path_params["queue"], "task": form.get("task", "")}
    try:
        if action not in QUEUE_ACTIONS:
            raise ApiError(400, 12, f"unknown queue action {action!r}")
        await run_in_threadpool(call_api, state, session, QUEUE_ACTIONS[action], body)
    except ApiError as exc:
        return RedirectResponse(f"/queues?error={quote(exc.msg, safe='')}", status_code=303)
    return RedirectResponse(f"/queues?msg={quote(action + ': done', safe='')}", status_code=303)


def _models(state: ServerState, session: Session) -> dict[str, Any]:
    body = {"order_by": ["-created"], "page": 0, "page_size": MODELS_SHOWN}
    models = call_api(state, session, "models.get_all", body)["models"]
    creators = [m["task"] for m in models if m.get("task")]
    return {"models": models, "projects": names(state.store.conn(), "projects"),
            "task_names": _task_names(state, creators)}  # fmt: skip


async def models_page(state: ServerState, request: Request) -> Response:
    session = session_of(state, request)
    if session is None:
        return login_redirect(request)
    found = await run_in_threadpool(_models, state, session)
    return page("models.html", base_context(state, request, session, **found))


async def model_page(state: ServerState, request: Request) -> Response:
    session = session_of(state, request)
    if session is None:
        return login_redirect(request)
    model_id = request.path_params["model"]
    try:
        found = await run_in_threadpool(
            call_api, state, session, "models.get_by_id", {"model": model_id}
        )
    except ApiError as exc:
        return page("message.html", base_context(state, request, session, text=exc.msg), 404)
    model = found["model"]
    task_name = _task_names(state, [model["task"]] if model.get("task") else [])
    context = base_context(state, request, session, model=model, task_names=task_name)
    return page("model.html", context)
