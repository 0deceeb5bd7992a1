"""The plots and debug samples tabs: what report_plotly / table / scatter2d / matplotlib and
report_image / media stored, listed cheaply; one plot's figure read only when it is shown."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent.server.state import ServerState
from agent.server.web.render import session_of
from agent.server.web.task_view import download_link

PLOT = "plot"
IMAGE = "training_debug_image"
MAX_PLOTS = 5_000  # (metric, variant) pairs listed on the plots tab
MAX_SAMPLES = 2_000  # debug sample events looked at, newest first
SAMPLES_PER_SERIES = 8
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg")
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def plot_list(conn: sqlite3.Connection, task_id: str) -> list[dict[str, Any]]:
    """The latest plot of each (metric, variant), without reading any figure: the figures
    are fetched one by one as they scroll into view (``plot.json``)."""
    rows = conn.execute(
        "SELECT MAX(seq), metric, variant, iter, COUNT(*) FROM events WHERE task=? AND type=? "
        "GROUP BY metric, variant ORDER BY metric, variant LIMIT ?",
        (task_id, PLOT, MAX_PLOTS),
    ).fetchall()
    return [
        {"seq": r[0], "metric": r[1] or "", "variant": r[2] or "", "iter": r[3], "reports": r[4]}
        for r in rows
    ]


def _sample(url: str, hosts: tuple[str, ...]) -> dict[str, Any]:
    link = download_link(url, hosts)
    path = urlsplit(url).path.lower()
    return {"url": url, "link": link, "image": bool(link) and path.endswith(_IMAGE_SUFFIXES)}


def sample_groups(conn: sqlite3.Connection, task_id: str, host: str) -> list[dict[str, Any]]:
    """Debug samples per (metric, variant), newest iteration first: images shown through the
    console's file route, other media (and files elsewhere) as links."""
    rows = conn.execute(
        "SELECT metric, variant, iter, json_extract(doc, '$.url') FROM events "
        "WHERE task=? AND type=? ORDER BY timestamp DESC, seq DESC LIMIT ?",
        (task_id, IMAGE, MAX_SAMPLES),
    )
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    hosts = (f"{host}/files",)
    for metric, variant, iteration, url in rows:
        found = groups.setdefault((metric or "", variant or ""), [])
        if len(found) < SAMPLES_PER_SERIES and isinstance(url, str):
            found.append({"iter": iteration, **_sample(url, hosts)})
    return [
        {"metric": key[0], "variant": key[1], "samples": samples}
        for key, samples in sorted(groups.items())
    ]


def tab_context(conn: sqlite3.Connection, task_id: str, tab: str, host: str) -> dict[str, Any]:
    """What the task page needs for ``tab`` beyond the task itself (read only for that tab)."""
    if tab == "plots":
        return {"plots": plot_list(conn, task_id)}
    if tab == "samples":
        return {"sample_groups": sample_groups(conn, task_id, host)}
    return {}


def confined_images(text: str, host: str) -> str:
    """The figure, its layout images on this server's files host pointed at the console's file
    route (the SDK reports a matplotlib figure or an image as a plot that way; the browser has
    no API token for ``/files``, and the CSP loads no other origin)."""
    if '"images"' not in text:
        return text
    try:
        figure = json.loads(text)
    except ValueError:
        return text
    layout = figure.get("layout") if isinstance(figure, dict) else None
    images = layout.get("images") if isinstance(layout, dict) else None
    if not isinstance(images, list):
        return text
    for image in images:
        if isinstance(image, dict) and isinstance(image.get("source"), str):
            image["source"] = download_link(image["source"], (f"{host}/files",)) or image["source"]
    return json.dumps(figure)


async def plot_json(state: ServerState, request: Request) -> Response:
    """One stored plot's figure (the plotly JSON the SDK sent), as stored but for
    ``confined_images``."""
    if session_of(state, request) is None:
        return JSONResponse({"error": "not logged in"}, status_code=401, headers=_NO_STORE)
    task_id = request.path_params["task"]
    try:
        seq = int(request.query_params.get("seq", ""))
    except ValueError:
        return JSONResponse({"error": "seq must be a number"}, status_code=400, headers=_NO_STORE)

    def load() -> Any:
        return (
            state.store.conn()
            .execute(
                "SELECT json_extract(doc, '$.plot_str') FROM events "
                "WHERE seq=? AND task=? AND type=?",
                (seq, task_id, PLOT),
            )
            .fetchone()
        )

    row = await run_in_threadpool(load)
    if row is None or not isinstance(row[0], str):
        return JSONResponse({"error": "no such plot"}, status_code=404, headers=_NO_STORE)
    figure = confined_images(row[0], str(request.base_url).rstrip("/"))
    return Response(figure, media_type="application/json", headers=_NO_STORE)


def routes() -> list[tuple[str, Callable[..., Awaitable[Response]], list[str]]]:
    return [("/tasks/{task}/plot.json", plot_json, ["GET", "HEAD"])]
