"""Routes built on the first request that may need them (the web console: jinja2, numpy).

An idle control plane serving agents and the SDK never builds them: every request of theirs is
an API path (``service.action``) or the file service, which ``claims`` turns away without
loading anything. The first request it claims builds the routes (a one-off import, ~0.15 s on
the server's event loop) and they then match exactly as routes listed in the app would: the
first full match wins, else the first partial one (405), else the routes after this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

_MATCHED = "conveyor.lazy_route"  # the inner route that matched, from matches() to handle()


class LazyRoutes(BaseRoute):
    """``build()``'s routes, built when ``claims(path)`` first says a request may be theirs."""

    def __init__(
        self, build: Callable[[], Sequence[BaseRoute]], claims: Callable[[str], bool]
    ) -> None:
        self._build = build
        self._claims = claims
        self._routes: Sequence[BaseRoute] | None = None

    @property
    def loaded(self) -> bool:
        return self._routes is not None

    def routes(self) -> Sequence[BaseRoute]:
        # Called on the event loop only (matching is synchronous), so it is built once.
        if self._routes is None:
            self._routes = self._build()
        return self._routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # The whole path, as the API's dispatch reads it (request.url.path)
        if scope["type"] != "http" or not self._claims(scope["path"]):
            return Match.NONE, {}
        partial: tuple[Match, Scope] | None = None
        for route in self.routes():
            match, child = route.matches(scope)
            if match is Match.FULL:
                return match, {**child, _MATCHED: route}
            if match is Match.PARTIAL and partial is None:
                partial = (match, {**child, _MATCHED: route})
        return partial or (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: BaseRoute = scope.pop(_MATCHED)
        scope["route"] = route
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes():
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                continue
        raise NoMatchFound(name, path_params)
