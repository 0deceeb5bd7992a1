"""Endpoint registry: ``@endpoint("tasks.create")`` maps a "service.action" to a handler.

A handler is a plain synchronous function ``(Call) -> dict`` returning the ``data`` part of the
envelope; it raises ``ApiError`` to refuse. Handlers run in a worker thread, except ``inline``
ones: short, bounded work (a lookup or update by primary key, a queue pop) that costs less than
the thread hand-off (~0.3 ms), run on the event loop when no write is in progress.

A *waiting* endpoint (``@waiting_endpoint``) is a coroutine on the event loop: a long poll that
spends its time awaiting, never blocking (its reads must be as short as an inline handler's).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.server.accepts import Accepts, check
from agent.server.state import ServerState
from agent.server.store import Store


@dataclass(frozen=True)
class Identity:
    user: str
    company: str


@dataclass(frozen=True)
class Call:
    endpoint: str
    body: Mapping[str, Any]
    state: ServerState
    identity: Identity | None  # None only for public endpoints
    worker: str  # X-ClearML-Worker header, "" if absent
    authorization: str  # raw Authorization header (auth.login reads it)
    raw_lines: tuple[Any, ...] = ()  # json-lines bodies (events.add_batch)

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def user(self) -> str:
        return self.identity.user if self.identity else ""


Handler = Callable[[Call], dict[str, Any]]
WaitingHandler = Callable[[Call], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Endpoint:
    name: str
    handler: Handler
    public: bool
    inline: bool
    waiting: WaitingHandler | None = None  # set: ``handler`` is unused, this is awaited
    accepts: Accepts | None = None  # a write endpoint's fields (accepts.py); checked first


_ENDPOINTS: dict[str, Endpoint] = {}


def endpoint(
    *names: str, public: bool = False, inline: bool = False, accepts: Accepts | None = None
) -> Callable[[Handler], Handler]:
    """Register ``handler`` under ``names``; with ``accepts``, a request with a field it does
    not take is refused (400/12 naming it) before the handler runs."""

    def register(handler: Handler) -> Handler:
        run = handler if accepts is None else _checked(handler, accepts)
        for name in names:
            if name in _ENDPOINTS:
                raise ValueError(f"endpoint {name} registered twice")
            _ENDPOINTS[name] = Endpoint(name, run, public, inline, accepts=accepts)
        return handler

    return register


def _checked(handler: Handler, spec: Accepts) -> Handler:
    @functools.wraps(handler)
    def run(call: Call) -> dict[str, Any]:
        check(call.endpoint, call.body, spec)
        return handler(call)

    return run


def waiting_endpoint(name: str) -> Callable[[WaitingHandler], WaitingHandler]:
    def register(handler: WaitingHandler) -> WaitingHandler:
        if name in _ENDPOINTS:
            raise ValueError(f"endpoint {name} registered twice")
        _ENDPOINTS[name] = Endpoint(name, _not_sync, False, False, waiting=handler)
        return handler

    return register


def _not_sync(call: Call) -> dict[str, Any]:
    raise RuntimeError(f"{call.endpoint} is a waiting endpoint: await Endpoint.waiting")


def lookup(name: str) -> Endpoint | None:
    return _ENDPOINTS.get(name)


def names() -> list[str]:
    return sorted(_ENDPOINTS)


def known_services() -> set[str]:
    return {name.split(".", 1)[0] for name in _ENDPOINTS}


def endpoints() -> Mapping[str, Endpoint]:
    return _ENDPOINTS
