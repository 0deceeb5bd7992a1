"""The console's routes, mounted into the embedded server's app before its API catch-all.

Every page needs a session (else: redirect to /login); every POST also a CSRF token. Pages
are GET only, so a POST to any other path still reaches the API as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from agent.server.errors import ApiError
from agent.server.state import ServerState
from agent.server.taskstore import find_task
from agent.server.web import data, fleet, login, plots, timeline
from agent.server.web.actions import ACTIONS, run_action
from agent.server.web.compare import compare_page, compare_scalars
from agent.server.web.links import TAB_TITLES, TABS, task_link_target
from agent.server.web.render import (
    HERE,
    base_context,
    check_post,
    forbidden,
    login_redirect,
    page,
    session_of,
)
from agent.server.web.task_view import task_context
from agent.server.web.tasks_list import list_tasks, names, parse_filter

Handler = Callable[[ServerState, Request], Awaitable[Response]]


async def tasks_page(state: ServerState, request: Request) -> Response:
    session = session_of(state, request)
    if session is None:
        return login_redirect(request)
    flt = parse_filter(dict(request.query_params))

    def load() -> dict[str, object]:
        conn = state.store.conn()
        return {
            **list_tasks(conn, flt),
            "projects": names(conn, "projects"),
            "queue_names": names(conn, "queues"),
        }

    found = await run_in_threadpool(load)
    template = "tasks_rows.html" if request.headers.get("hx-request") else "tasks.html"
    query = {k: v for k, v in request.query_params.items() if k != "after"}
    return page(template, base_context(state, request, session, flt=flt, query=query, **found))


async def task_page(state: ServerState, request: Request) -> Response:
    session = session_of(state, request)
    if session is None:
        return login_redirect(request)
    task_id = request.path_params["task"]
    tab = request.path_params.get("tab", "execution")
    if tab not in TABS:
        return RedirectResponse(f"/tasks/{quote(task_id, safe='')}/info", status_code=303)

    def load() -> dict[str, object] | None:
        conn = state.store.conn()
        doc = find_task(conn, task_id)
        if doc is None:
            return None
        host = str(request.base_url).rstrip("/")
        stages = {"stages": timeline.bars(timeline.read(conn, task_id))} if tab == "info" else {}
        return {**task_context(conn, doc, host), **plots.tab_context(conn, task_id, tab, host),
                **stages}  # fmt: skip

    found = await run_in_threadpool(load)
    if found is None:
        context = base_context(state, request, session, task_id=task_id)
        return page("not_found.html", context, status=404)
    messages = {"msg": request.query_params.get("msg", ""),
                "error": request.query_params.get("error", "")}  # fmt: skip
    tabs = {"tab": tab, "tabs": TABS, "tab_titles": TAB_TITLES}
    return page("task.html", base_context(state, request, session, **tabs, **messages, **found))


async def task_action(state: ServerState, request: Request) -> Response:
    session, form, refused = await check_post(state, request)
    if session is None:
        return login_redirect(request)
    if refused:
        return forbidden(refused)
    task_id, action = request.path_params["task"], request.path_params["action"]
    back = form.get("tab", "execution") if form.get("tab") in TABS else "execution"
    try:
        shown, message = await run_in_threadpool(run_action, state, session, action, task_id, form)
    except ApiError as exc:
        target = f"/tasks/{quote(task_id, safe='')}/{back}?error={quote(exc.msg, safe='')}"
        return RedirectResponse(target, status_code=303)
    if action == "clone":
        back = "configuration"
    target = f"/tasks/{quote(shown, safe='')}/{back}?msg={quote(message, safe='')}"
    return RedirectResponse(target, status_code=303)


async def sdk_link(state: ServerState, request: Request) -> Response:
    target = task_link_target(request.url.path)
    if target is None:
        return RedirectResponse("/tasks", status_code=303)
    return RedirectResponse(target, status_code=303)


async def home(state: ServerState, request: Request) -> Response:
    return RedirectResponse("/tasks", status_code=303)


def _bind(state: ServerState, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(state, request)

    endpoint.__name__ = handler.__name__
    return endpoint


def web_routes(state: ServerState) -> list[BaseRoute]:
    """The console's routes for one server state."""
    get = ["GET", "HEAD"]
    pages: list[tuple[str, Handler, list[str]]] = [
        ("/", home, get),
        ("/login", login.login_page, get),
        ("/login", login.login_post, ["POST"]),
        ("/login/once/{token}", login.login_once, get),
        ("/logout", login.logout, ["POST"]),
        *data.routes(state),
        *plots.routes(),
        ("/tasks", tasks_page, get),
        ("/tasks/{task}", task_page, get),
        ("/tasks/{task}/{tab}", task_page, get),
        ("/tasks/{task}/action/{action}", task_action, ["POST"]),
        ("/compare", compare_page, get),
        ("/compare/scalars.json", compare_scalars, get),
        ("/queues", fleet.queues_page, get),
        ("/queues/{queue}/action/{action}", fleet.queue_action, ["POST"]),
        ("/models", fleet.models_page, get),
        ("/models/{model}", fleet.model_page, get),
        ("/projects/{rest:path}", sdk_link, get),
        ("/datasets/{rest:path}", sdk_link, get),
        ("/pipelines/{rest:path}", sdk_link, get),
    ]
    routes: list[BaseRoute] = [
        Route(path, _bind(state, handler), methods=methods) for path, handler, methods in pages
    ]
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    assert set(ACTIONS) >= {"clone", "save"}
    return routes
