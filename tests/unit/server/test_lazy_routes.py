"""Routes built on first use match exactly as if they were listed: built only when claimed."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from agent.server.lazy_routes import LazyRoutes


async def _page(request: Request) -> Response:
    return PlainTextResponse(f"page {request.path_params.get('name', '')}")


async def _api(request: Request) -> Response:
    return PlainTextResponse(f"api {request.method} {request.url.path}")


def _app() -> tuple[Starlette, LazyRoutes, list[int]]:
    builds: list[int] = []

    def build() -> list[BaseRoute]:
        builds.append(1)
        return [
            Route("/pages/{name}", _page, methods=["GET"]),
            Route("/form", _page, methods=["POST"]),
        ]

    lazy = LazyRoutes(build, claims=lambda path: "." not in path)
    catch_all = Route("/{path:path}", _api, methods=["GET", "POST", "PUT"])
    return Starlette(routes=[lazy, catch_all]), lazy, builds


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_paths_it_does_not_claim_never_build_the_routes() -> None:
    app, lazy, builds = _app()
    async with _client(app) as client:
        assert (await client.get("/tasks.get_all")).text == "api GET /tasks.get_all"
        assert (await client.post("/pages.x")).text == "api POST /pages.x"
    assert not lazy.loaded
    assert builds == []


async def test_the_first_claimed_request_builds_them_once_and_they_match() -> None:
    app, lazy, builds = _app()
    async with _client(app) as client:
        assert (await client.get("/pages/a")).text == "page a"
        assert lazy.loaded
        assert (await client.get("/pages/b")).text == "page b"
        # claimed but not theirs: the routes after it answer, as if the inner ones were listed
        assert (await client.get("/elsewhere")).text == "api GET /elsewhere"
    assert builds == [1]


async def test_a_method_mismatch_yields_to_a_later_full_match_else_405() -> None:
    app, _, _ = _app()
    async with _client(app) as client:
        # /form is POST only: a GET is a partial match, the catch-all's full match wins
        assert (await client.get("/form")).text == "api GET /form"
        # DELETE matches nothing fully: the first partial (the inner POST route) answers 405
        assert (await client.delete("/form")).status_code == 405
