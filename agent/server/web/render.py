"""Rendering and request plumbing shared by the pages: Jinja2, security headers, sessions,
and calling the REST API's own handlers (the console has no write path of its own)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from agent.server.errors import ApiError
from agent.server.registry import Call, Identity, lookup
from agent.server.state import COMPANY_ID, ServerState
from agent.server.web.session import COOKIE, Session, csrf_ok, csrf_token, decode_session

HERE = Path(__file__).parent
MAX_FORM_FIELDS = 100_000  # a draft's edit form has a field per hyperparameter
# No inline script or style anywhere: every script is a file under /static.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: Any) -> str:
    if not value:
        return ""
    text = str(value)
    return text[:19].replace("T", " ")


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def duration(started: Any, ended: Any, now: datetime | None = None) -> str:
    """``1h 02m``, ``3m 05s`` or ``12s`` between two ISO stamps (no end: until now)."""
    begin = parse_time(started)
    if begin is None:
        return ""
    end = parse_time(ended) or now or datetime.now(UTC)
    seconds = max(0, int((end - begin).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["when"] = _when
TEMPLATES.filters["q"] = lambda value: quote(str(value), safe="")
TEMPLATES.globals["duration"] = duration


def page(name: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
    html = TEMPLATES.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def session_of(state: ServerState, request: Request) -> Session | None:
    value = request.cookies.get(COOKIE, "")
    return decode_session(state, value) if value else None


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def base_context(
    state: ServerState, request: Request, session: Session, **extra: Any
) -> dict[str, Any]:
    return {
        "csrf": csrf_token(state, session),
        "user": session.user,
        "path": request.url.path,
        **extra,
    }


async def check_post(
    state: ServerState, request: Request
) -> tuple[Session | None, dict[str, str], str]:
    """(session, form, refusal): the form of a POST whose session and CSRF token are valid;
    otherwise ``refusal`` says why (and the caller answers 403 or redirects to login)."""
    session = session_of(state, request)
    if session is None:
        return None, {}, "not logged in"
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        return session, {}, f"cross-origin request from {origin} refused"
    form = await request.form(max_fields=MAX_FORM_FIELDS)
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    if not csrf_ok(state, session, fields.get("csrf", "")):
        return session, {}, "missing or invalid CSRF token: reload the page and try again"
    return session, fields, ""


def forbidden(reason: str) -> Response:
    return HTMLResponse(f"<p>403 forbidden: {_escape(reason)}</p>", 403, headers=SECURITY_HEADERS)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def call_api(
    state: ServerState, session: Session, name: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Run REST endpoint ``name``'s own handler with ``body`` as ``session``'s user (raises
    ApiError exactly as the API would refuse it)."""
    endpoint = lookup(name)
    if endpoint is None:
        raise ApiError(404, 0, f"unknown endpoint {name!r}")
    call = Call(
        endpoint=name,
        body=dict(body),
        state=state,
        identity=Identity(user=session.user, company=COMPANY_ID),
        worker="",
        authorization="",
    )
    return endpoint.handler(call)


async def call_api_async(
    state: ServerState, session: Session, name: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    return await run_in_threadpool(call_api, state, session, name, body)
