"""What the task page shows: the task document arranged per tab (read-only queries)."""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import unquote

from agent.server.web.scalars import metric_names
from agent.server.web.tasks_list import names

FILES_PREFIX = "/files/"


def _models(conn: sqlite3.Connection, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for entry in entries:
        row = conn.execute(
            "SELECT name, uri, json_extract(doc, '$.framework') FROM models WHERE id=?",
            (entry.get("model") or "",),
        ).fetchone()
        name, uri, framework = row if row else ("(missing)", "", "")
        out.append({**entry, "model_name": name, "uri": uri or "", "framework": framework or ""})
    return out


def download_link(uri: str, files_hosts: tuple[str, ...]) -> str:
    """A console link for an artifact or model stored on this server's files host."""
    for host in files_hosts:
        if host and uri.startswith(host.rstrip("/") + "/"):
            return "/web/files/" + uri[len(host.rstrip("/")) + 1 :]
    if uri.startswith(("http://", "https://")) and FILES_PREFIX in uri:
        return "/web/files/" + uri.split(FILES_PREFIX, 1)[1]
    return ""


def task_context(conn: sqlite3.Connection, doc: dict[str, Any], host: str) -> dict[str, Any]:
    """Everything the task page's tabs show, ready for the template."""
    projects, queues = names(conn, "projects"), names(conn, "queues")
    hosts = (f"{host}/files",)
    artifacts = [
        {**a, "link": download_link(str(a.get("uri") or ""), hosts),
         "display_uri": unquote(str(a.get("uri") or ""))}
        for a in doc["execution"].get("artifacts") or []
    ]  # fmt: skip
    models_in = _models(conn, doc["models"]["input"])
    models_out = _models(conn, doc["models"]["output"])
    for model in (*models_in, *models_out):
        model["link"] = download_link(model["uri"], hosts)
    registry = conn.execute(
        "SELECT id, name FROM models ORDER BY created DESC LIMIT 200"
    ).fetchall()
    return {
        "task": doc,
        "project_name": projects.get(doc.get("project") or "", ""),
        "queue_name": queues.get(doc["execution"].get("queue") or "", ""),
        "queues": sorted(queues.items(), key=lambda item: item[1]),
        "artifacts": artifacts,
        "models_in": models_in,
        "models_out": models_out,
        "registry": [{"id": r[0], "name": r[1]} for r in registry],
        "metrics": metric_names(doc),
        "requirements": (doc["script"].get("requirements") or {}),
        "is_draft": doc["status"] == "created",
    }
