"""The console's data requests: log pages and search, the log download, chart series, the
live stream (Server-Sent Events), and file downloads for the logged-in browser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from agent.server.files import FileStream
from agent.server.files_paths import FilesError, object_key
from agent.server.files_store import FileStore
from agent.server.state import ServerState
from agent.server.taskstore import find_task
from agent.server.web import console, scalars
from agent.server.web.render import session_of

STREAM_POLL = 0.25  # seconds between looks at the database for a live page
STREAM_LIFETIME = 300.0  # then the browser's EventSource reconnects (Last-Event-ID)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name, "")
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _float(request: Request, name: str) -> float | None:
    value = request.query_params.get(name, "")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _unauthorized() -> Response:
    return JSONResponse({"error": "not logged in"}, status_code=401, headers=_NO_STORE)


def _missing(task_id: str) -> Response:
    return JSONResponse({"error": f"no task {task_id!r}"}, status_code=404, headers=_NO_STORE)


async def log_json(state: ServerState, request: Request) -> Response:
    if session_of(state, request) is None:
        return _unauthorized()
    task_id = request.path_params["task"]
    pattern = request.query_params.get("q", "")

    def load() -> dict[str, Any] | None:
        with state.store.read() as conn:  # one snapshot: the count and the page agree
            if find_task(conn, task_id) is None:
                return None
            if pattern:
                return console.search(conn, task_id, pattern, _int(request, "from") or 0)
            limit = _int(request, "limit") or console.PAGE
            return console.page(conn, task_id, _int(request, "offset"), limit)

    try:
        found = await run_in_threadpool(load)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400, headers=_NO_STORE)
    return JSONResponse(found, headers=_NO_STORE) if found is not None else _missing(task_id)


async def log_download(state: ServerState, request: Request) -> Response:
    if session_of(state, request) is None:
        return _unauthorized()
    task_id = request.path_params["task"]
    doc = await run_in_threadpool(find_task, state.store.conn(), task_id)
    if doc is None:
        return _missing(task_id)

    async def chunks() -> AsyncIterator[bytes]:
        parts = await run_in_threadpool(lambda: list(console.download(state.store.conn(), task_id)))
        for part in parts:
            yield part

    name = _SAFE_NAME.sub("_", str(doc["name"]))[:80] or "task"
    headers = {**_NO_STORE, "Content-Disposition": f'attachment; filename="{name}.{task_id}.log"'}
    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8", headers=headers)


async def scalars_json(state: ServerState, request: Request) -> Response:
    if session_of(state, request) is None:
        return _unauthorized()
    task_id = request.path_params["task"]
    metric = request.query_params.get("metric", "")
    x_axis = "time" if request.query_params.get("x") == "time" else "iter"

    def load() -> list[dict[str, Any]]:
        with state.store.read() as conn:
            return scalars.series(
                conn, task_id, metric, width=_int(request, "width") or 800,
                x_axis=x_axis, x0=_float(request, "xmin"), x1=_float(request, "xmax"),
            )  # fmt: skip

    found = await run_in_threadpool(load)
    return JSONResponse({"metric": metric, "x": x_axis, "series": found}, headers=_NO_STORE)


def _status(state: ServerState, task_id: str) -> list[Any] | None:
    row = (
        state.store.conn()
        .execute(
            "SELECT status, json_extract(doc, '$.status_message'), "
            "json_extract(doc, '$.last_iteration'), last_update FROM tasks WHERE id=?",
            (task_id,),
        )
        .fetchone()
    )
    return None if row is None else list(row)


def _after(state: ServerState, request: Request) -> int:
    given = request.headers.get("last-event-id") or request.query_params.get("after", "")
    try:
        return int(given)
    except ValueError:
        return console.latest_seq(state.store.conn())


async def stream(state: ServerState, request: Request) -> Response:
    """Live lines (``event: log``) and status changes (``event: status``) of one task."""
    if session_of(state, request) is None:
        return _unauthorized()
    task_id = request.path_params["task"]
    after = await run_in_threadpool(_after, state, request)

    async def events() -> AsyncIterator[str]:
        nonlocal after
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STREAM_LIFETIME
        last_status: list[Any] | None = None
        # The server's shutdown sets this at once: an open page never holds up a stop.
        with state.queue_waiters.watch(frozenset()) as closing:
            while not closing.is_set() and loop.time() < deadline:
                entries = await run_in_threadpool(console.since, state.store.conn(), task_id, after)
                if entries:
                    after = entries[-1]["seq"]
                    yield f"id: {after}\nevent: log\ndata: {json.dumps(entries)}\n\n"
                status = await run_in_threadpool(_status, state, task_id)
                if status != last_status:
                    last_status = status
                    yield f"event: status\ndata: {json.dumps(status)}\n\n"
                with contextlib.suppress(TimeoutError):  # the poll interval (or the stop)
                    await asyncio.wait_for(closing.wait(), STREAM_POLL)

    headers = {**_NO_STORE, "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _file_download(store: FileStore) -> Callable[[ServerState, Request], Awaitable[Response]]:
    async def download(state: ServerState, request: Request) -> Response:
        if session_of(state, request) is None:
            return PlainTextResponse("not logged in", status_code=401)
        try:
            fd, info = await run_in_threadpool(
                store.open_read, object_key(request.path_params["path"])
            )
        except FilesError as exc:
            return PlainTextResponse(exc.msg, status_code=exc.status)
        return FileStream(fd, info, None, head=request.method == "HEAD")

    return download


def routes(state: ServerState) -> list[tuple[str, Callable[..., Awaitable[Response]], list[str]]]:
    get = ["GET", "HEAD"]
    store = FileStore(state.config.files_dir, state.config.files_quota)
    return [
        ("/tasks/{task}/log.json", log_json, get),
        ("/tasks/{task}/console.txt", log_download, get),
        ("/tasks/{task}/scalars.json", scalars_json, get),
        ("/tasks/{task}/stream", stream, ["GET"]),
        ("/web/files/{path:path}", _file_download(store), get),
    ]
