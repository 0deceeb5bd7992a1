"""Login with the server's access key and secret (or a one-time link), and logout."""

from __future__ import annotations

import hmac
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from agent.server.state import ServerState
from agent.server.web.render import SECURITY_HEADERS, check_post, forbidden, page
from agent.server.web.session import COOKIE, SESSION_TTL, encode_session, use_login_link

DEFAULT_USER = "conveyor"


def _next(value: str) -> str:
    """Only a local path: a login never sends the browser to another site."""
    local = value.startswith("/") and not value.startswith("//")
    # browsers read "/\\evil.example" as "//evil.example": no backslash or control character
    clean = "\\" not in value and all(ord(c) >= 0x20 for c in value)
    return value if local and clean else "/tasks"


def _logged_in(state: ServerState, request: Request, user: str, target: str) -> Response:
    response = RedirectResponse(_next(target), status_code=303)
    response.set_cookie(
        COOKIE,
        encode_session(state, user),
        max_age=SESSION_TTL,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def login_page(state: ServerState, request: Request, error: str = "") -> Response:
    target = _next(request.query_params.get("next", "/tasks"))
    return page("login.html", {"next": target, "error": error}, status=401 if error else 200)


def _check_pair(state: ServerState, key: str, secret: str) -> str | None:
    row = (
        state.store.conn()
        .execute("SELECT secret_key, user_id FROM credentials WHERE access_key=?", (key,))
        .fetchone()
    )
    if row is None or not hmac.compare_digest(str(row[0]), secret):
        return None
    return str(row[1])


async def login_post(state: ServerState, request: Request) -> Response:
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        return forbidden(f"cross-origin login from {origin} refused")
    form = await request.form()
    key, secret = str(form.get("access_key", "")).strip(), str(form.get("secret_key", "")).strip()
    user = await run_in_threadpool(_check_pair, state, key, secret)
    target = str(form.get("next", "/tasks"))
    if user is None:
        context = {"next": _next(target), "error": "invalid access key or secret key"}
        return page("login.html", context, status=401)
    return _logged_in(state, request, user, target)


async def login_once(state: ServerState, request: Request) -> Response:
    token = request.path_params["token"]
    if not await run_in_threadpool(use_login_link, state, token):
        error = "this login link was already used or has expired: log in with the key and secret"
        return page("login.html", {"next": "/tasks", "error": error}, status=401)
    return _logged_in(state, request, DEFAULT_USER, "/tasks")


async def logout(state: ServerState, request: Request) -> Response:
    session, _, refused = await check_post(state, request)
    if session is not None and refused:
        return forbidden(refused)
    response = RedirectResponse(f"/login?next={quote('/tasks')}", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    response.headers.update({k: v for k, v in SECURITY_HEADERS.items() if k == "Cache-Control"})
    return response
