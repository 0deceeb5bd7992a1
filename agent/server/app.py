"""The ASGI app: route ``/[v2.x/]service.action`` to a handler, wrap results in the envelope.

HTTP status always equals ``meta.result_code``. Unknown endpoints are 404, refused requests
400/401 with a subcode and a message; only a bug in a handler yields a 500 (and is logged).
``/files`` is the file service (``files.py``).
The loop only reads the request and routes it; authentication, parsing, the handler and
encoding run together in a worker thread (or inline, for the short endpoints).
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

# Importing the service modules registers their endpoints.
from agent.server import (  # noqa: F401
    auth,
    event_reads,
    events,
    misc,
    models,
    projects,
    queues,
    task_extras,
    task_status,
    tasks,
    workers,
)
from agent.server.body import (
    LARGE_BODY,
    large_body_slot,
    parse_body,
    read_capped,
    too_large,
)
from agent.server.errors import ApiError
from agent.server.files import FileService
from agent.server.lazy_routes import LazyRoutes
from agent.server.registry import Call, Endpoint, Identity, lookup
from agent.server.state import ServerState
from agent.server.watchdog import Watchdog

log = structlog.get_logger()

_PATH = re.compile(
    r"^/(?:api/)?(?:v(?P<version>\d+(?:\.\d+)*)/)?(?P<service>[a-z_]+)\.(?P<action>[a-z_]+)/?$"
)
_WORKER_HEADERS = ("x-clearml-worker", "x-trains-worker")


def encode(
    code: int, data: Mapping[str, Any] | None, endpoint: str = "", subcode: int = 0, msg: str = "OK"
) -> bytes:
    """The envelope as JSON bytes."""
    body = {
        "meta": {
            "id": uuid.uuid4().hex,
            "trx": uuid.uuid4().hex,
            "endpoint": {"name": endpoint, "requested_version": "", "actual_version": ""},
            "result_code": code,
            "result_subcode": subcode,
            "result_msg": msg,
            "error_stack": None,
        },
        "data": dict(data) if data is not None else {},
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Reply:
    code: int
    content: bytes

    @staticmethod
    def of(code: int, data: Mapping[str, Any] | None, endpoint: str = "", **meta: Any) -> Reply:
        return Reply(code, encode(code, data, endpoint, **meta))

    def response(self) -> Response:
        return Response(self.content, status_code=self.code, media_type="application/json")


def _worker(request: Request) -> str:
    for header in _WORKER_HEADERS:
        if request.headers.get(header):
            return request.headers[header]
    return ""


@dataclass(frozen=True)
class Incoming:
    """What a handler needs from the HTTP request, read on the event loop."""

    name: str
    raw: bytes
    content_type: str
    query: Mapping[str, str]
    authorization: str
    worker: str


def _call(state: ServerState, endpoint: Endpoint, incoming: Incoming) -> Call:
    """Authenticate and parse: the handler's view of the request (raises ApiError)."""
    identity: Identity | None = None
    if not endpoint.public:
        identity = auth.authenticate(state, incoming.authorization)
    body, lines = parse_body(incoming.raw, incoming.content_type, incoming.name)
    for key, value in incoming.query.items():
        body.setdefault(key, value)
    return Call(
        endpoint=incoming.name,
        body=body,
        state=state,
        identity=identity,
        worker=incoming.worker,
        authorization=incoming.authorization,
        raw_lines=lines,
    )


def process(state: ServerState, endpoint: Endpoint, incoming: Incoming) -> Reply:
    """Authenticate, parse, run the handler, encode: the whole request, on whichever thread."""
    try:
        return Reply.of(200, endpoint.handler(_call(state, endpoint, incoming)), incoming.name)
    except Exception as exc:  # noqa: BLE001 (a handler's bug: logged with its traceback, 500)
        return _refusal(incoming.name, exc)


def process_bounded(state: ServerState, endpoint: Endpoint, incoming: Incoming) -> Reply:
    """``process`` in a worker thread; large bodies take turns (``body.large_body_slot``)."""
    with large_body_slot(len(incoming.raw)):
        return process(state, endpoint, incoming)


async def process_waiting(state: ServerState, endpoint: Endpoint, incoming: Incoming) -> Reply:
    """A waiting endpoint's request, on the event loop."""
    assert endpoint.waiting is not None
    try:
        return Reply.of(
            200, await endpoint.waiting(_call(state, endpoint, incoming)), incoming.name
        )
    except Exception as exc:  # noqa: BLE001 (a handler's bug: logged with its traceback, 500)
        return _refusal(incoming.name, exc)


def _refusal(name: str, exc: Exception) -> Reply:
    """The envelope for a handler's exception: its refusal, or (a bug) a logged 500."""
    if isinstance(exc, ApiError):
        return Reply.of(exc.code, None, name, subcode=exc.subcode, msg=exc.msg)
    if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
        # Another process held the database past busy_timeout: transient; clients retry
        # 503 with backoff.
        log.warning("database_busy", endpoint=name, error=str(exc))
        return Reply.of(503, None, name, msg=f"database busy, retry: {exc}")
    log.error("request_failed", endpoint=name, exc_info=exc)
    return Reply.of(500, None, name, msg=f"internal error: {type(exc).__name__}: {exc}")


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


async def _incoming(state: ServerState, request: Request, name: str) -> Incoming | Response:
    """The request as the handlers take it, or the answer when its body cannot be read."""
    try:
        raw = await read_capped(
            request.stream(), request.headers.get("content-length"), state.config.max_body
        )
    except ClientDisconnect:  # the client gave up (e.g. a cancelled poll): nobody to answer
        log.debug("client disconnected before its request body was read", endpoint=name)
        return Response(status_code=400)
    except ApiError as exc:  # too large: answered now, the rest is never read
        reply = Reply.of(exc.code, None, name, subcode=exc.subcode, msg=exc.msg)
        return Response(
            reply.content,
            status_code=exc.code,
            media_type="application/json",
            headers={"Connection": "close"},
        )
    return Incoming(
        name=name,
        raw=raw,
        content_type=request.headers.get("content-type", ""),
        query=dict(request.query_params),
        authorization=request.headers.get("authorization", ""),
        worker=_worker(request),
    )


async def _answer(state: ServerState, endpoint: Endpoint, incoming: Incoming) -> Response:
    """Long polls on the loop; short bounded calls on the loop when no write is in progress;
    the rest in the thread pool."""
    name, raw = incoming.name, incoming.raw
    if endpoint.waiting is not None:
        if len(raw) > LARGE_BODY:  # parsed on the event loop: kept small
            return Reply.of(413, None, name, msg=too_large(LARGE_BODY, "passes").msg).response()
        return (await process_waiting(state, endpoint, incoming)).response()
    if endpoint.inline and len(raw) <= LARGE_BODY and not state.store.write_busy():
        return process(state, endpoint, incoming).response()
    reply = await run_in_threadpool(process_bounded, state, endpoint, incoming)
    return reply.response()


def create_app(
    state: ServerState, *, watchdog: bool = True, on_ready: Callable[[], None] | None = None
) -> Starlette:
    """The app for one server state; ``on_ready`` is called once startup is complete."""

    async def dispatch(request: Request) -> Response:
        match = _PATH.match(request.url.path)
        if match is None:
            return Reply.of(404, None, msg=f"unknown endpoint {request.url.path!r}").response()
        name = f"{match['service']}.{match['action']}"
        endpoint = lookup(name)
        if endpoint is None:
            msg = f"unknown endpoint {name!r} (not supported by this server)"
            return Reply.of(404, None, name, msg=msg).response()
        incoming = await _incoming(state, request, name)
        if isinstance(incoming, Response):
            return incoming
        return await _answer(state, endpoint, incoming)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dog = Watchdog(state) if watchdog else None
        if dog:
            dog.start()
        if on_ready:
            on_ready()
        try:
            yield
        finally:
            if dog:
                dog.stop()

    # The file service first: its prefix is not a "service.action" path. Then the web console
    # (GET pages and its own POST paths; agent/server/web), built on the first request for a
    # path that is not the API's: agents and the SDK never load it.
    routes = [
        *FileService(state).routes(),
        LazyRoutes(lambda: console_routes(state), claims=lambda path: not _PATH.match(path)),
        Route("/{path:path}", dispatch, methods=["GET", "POST", "PUT"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def server_config(app: Starlette) -> uvicorn.Config:
    """How uvicorn serves the app: HTTP only (no websocket library is loaded: nothing here
    speaks websockets; an upgrade request is answered as plain HTTP), no access log."""
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none")


def console_routes(state: ServerState) -> list[BaseRoute]:
    """The web console's routes (jinja2, numpy and the pages' modules load here)."""
    from agent.server.web.routes import web_routes

    return web_routes(state)


class AppServer(uvicorn.Server):
    """uvicorn's server for one state; its shutdown first ends the long polls, which would
    otherwise hold it up for as long as they may wait."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._state.queue_waiters.close()
        await super().shutdown(sockets)
