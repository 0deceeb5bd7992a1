"""Buttons and the draft edit form: each action is one or more calls of the REST API's own
handlers (``render.call_api``), so the console has no write path of its own.

Form field names (the stable hooks, docs/web.md): ``<section>/<name>`` a hyperparameter,
``config:<name>`` a configuration object, ``model:<name>`` an input model id or URL,
``docker_image`` / ``docker_args``, ``requirements``, ``new_param`` + ``new_value`` a new
hyperparameter, ``queue`` the queue to enqueue to.
"""

from __future__ import annotations

import posixpath
import shlex
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from agent.server.errors import ApiError, bad_request
from agent.server.state import ServerState
from agent.server.taskstore import load_task
from agent.server.web.render import call_api
from agent.server.web.session import Session

ACTIONS = ("clone", "enqueue", "abort", "requeue", "reset", "archive", "save")
_RESERVED = frozenset({"csrf", "queue", "docker_image", "docker_args", "requirements"})
ApiCall = tuple[str, dict[str, Any]]
CREATED = "$created"  # in a call's body: the id the previous models.create answered
MODEL_SCHEMES = ("file", "http", "https", "s3", "gs", "azure")


def _param_items(doc: dict[str, Any], form: Mapping[str, str]) -> list[dict[str, Any]]:
    """Hyperparameters whose value the form changed (or added), as API items."""
    items = []
    for key, value in form.items():
        if key in _RESERVED or key.startswith(("config:", "model:", "new_")) or "/" not in key:
            continue
        section, name = key.split("/", 1)
        if not section or not name:
            raise bad_request(f"hyperparameter field {key!r} must be named <section>/<name>")
        current = doc["hyperparams"].get(section, {}).get(name)
        if current is None or str(current.get("value", "")) != value:
            items.append({**(current or {}), "section": section, "name": name, "value": value})
    new = form.get("new_param", "").strip()
    if new:
        section, sep, name = new.partition("/")
        if not sep or not section or not name:
            raise bad_request(f"new parameter {new!r} must be named <section>/<name>")
        items.append({"section": section, "name": name, "value": form.get("new_value", "")})
    return items


def _config_items(doc: dict[str, Any], form: Mapping[str, str]) -> list[dict[str, Any]]:
    items = []
    for key, value in form.items():
        if key.startswith("config:"):
            name = key[len("config:") :]
            current = doc["configuration"].get(name) or {}
            if str(current.get("value", "")) != value:
                items.append({**current, "name": name, "value": value})
    return items


def _model_calls(
    conn: sqlite3.Connection, doc: dict[str, Any], form: Mapping[str, str]
) -> list[ApiCall]:
    current = {m.get("name"): m.get("model") for m in doc["models"]["input"]}
    calls: list[ApiCall] = []
    for key, value in form.items():
        name, model_id = key[len("model:") :], value.strip()
        if not key.startswith("model:") or not model_id or current.get(name) == model_id:
            continue
        if "://" in model_id:
            model_id = _model_by_url(conn, doc, name, model_id, calls)
        elif conn.execute("SELECT 1 FROM models WHERE id=?", (model_id,)).fetchone() is None:
            raise bad_request(f"input model {name!r}: no model with id {model_id!r}")
        body = {"task": doc["id"], "name": name, "model": model_id, "type": "input"}
        calls.append(("tasks.add_or_update_model", body))
    return calls


def _model_by_url(
    conn: sqlite3.Connection, doc: dict[str, Any], name: str, url: str, calls: list[ApiCall]
) -> str:
    """The latest registered model with this URL, else ``CREATED`` after a models.create
    call (added to ``calls``) that registers it, named after the URL's file."""
    parts = urlsplit(url)
    if parts.scheme not in MODEL_SCHEMES or any(c.isspace() for c in url):
        schemes = ", ".join(f"{s}://" for s in MODEL_SCHEMES)
        raise bad_request(f"input model {name!r}: {url[:200]!r} is not a URL ({schemes})")
    row = conn.execute(
        "SELECT id FROM models WHERE uri=? ORDER BY created DESC LIMIT 1", (url,)
    ).fetchone()
    if row is not None:
        return str(row[0])
    title = posixpath.basename(unquote(parts.path).rstrip("/")) or name
    body = {"name": title, "uri": url, "ready": True, "project": doc.get("project") or None}
    calls.append(("models.create", {k: v for k, v in body.items() if v is not None}))
    return CREATED


def save_calls(
    conn: sqlite3.Connection, doc: dict[str, Any], form: Mapping[str, str]
) -> list[ApiCall]:
    """The API calls that store a draft's edit form; raises ApiError before any is made."""
    if doc["status"] != "created":
        raise bad_request(f"only a draft can be edited; this task is {doc['status']!r}: clone it")
    task = doc["id"]
    calls: list[ApiCall] = []
    params = _param_items(doc, form)
    if params:
        calls.append(("tasks.edit_hyper_params", {"task": task, "hyperparams": params}))
    configs = _config_items(doc, form)
    if configs:
        calls.append(("tasks.edit_configuration", {"task": task, "configuration": configs}))
    calls.extend(_model_calls(conn, doc, form))
    container = dict(doc["container"])
    for field, key in (("docker_image", "image"), ("docker_args", "arguments")):
        if field in form and form[field].strip() != str(container.get(key) or ""):
            container[key] = form[field].strip()
    if container != doc["container"]:
        if container.get("arguments"):
            try:
                shlex.split(str(container["arguments"]))
            except ValueError as exc:
                raise bad_request(f"docker arguments: {exc}") from exc
        calls.append(("tasks.edit", {"task": task, "container": container}))
    requirements = doc["script"].get("requirements") or {}
    if "requirements" in form and form["requirements"] != str(requirements.get("pip") or ""):
        new = {**requirements, "pip": form["requirements"]}
        calls.append(("tasks.set_requirements", {"task": task, "requirements": new}))
    return calls


def _queue(conn: sqlite3.Connection, doc: dict[str, Any], form: Mapping[str, str]) -> str:
    """The queue chosen in the form, else the task's last queue, else the default one."""
    chosen = form.get("queue", "").strip() or doc["execution"].get("queue") or ""
    if chosen:
        return str(chosen)
    row = conn.execute("SELECT id FROM queues WHERE name='default'").fetchone()
    if row is None:
        raise bad_request("choose a queue: there is no default queue")
    return str(row[0])


def action_calls(
    conn: sqlite3.Connection, action: str, task_id: str, form: Mapping[str, str]
) -> list[ApiCall]:
    """The API calls for a button (everything but clone), checked before any is made."""
    doc = load_task(conn, task_id)
    task: dict[str, Any] = {"task": task_id}
    plans: dict[str, Callable[[], list[ApiCall]]] = {
        "save": lambda: save_calls(conn, doc, form),
        "enqueue": lambda: [("tasks.enqueue", {**task, "queue": _queue(conn, doc, form)})],
        "abort": lambda: [
            ("tasks.stop", {**task, "status_reason": "aborted from the web console"})
        ],
        "reset": lambda: [("tasks.reset", {**task, "force": True})],
        "archive": lambda: [("tasks.edit", {**task, "system_tags": _archived(doc)})],
        "requeue": lambda: _requeue(conn, doc, form),
    }
    if action not in plans:
        raise bad_request(f"unknown action {action!r}")
    return plans[action]()


def _archived(doc: dict[str, Any]) -> list[str]:
    return sorted({*doc["system_tags"], "archived"})


def _requeue(
    conn: sqlite3.Connection, doc: dict[str, Any], form: Mapping[str, str]
) -> list[ApiCall]:
    queue = _queue(conn, doc, form)
    calls: list[ApiCall] = []
    if doc["status"] not in ("created", "stopped", "failed"):
        calls.append(("tasks.reset", {"task": doc["id"], "force": True}))
    calls.append(("tasks.enqueue", {"task": doc["id"], "queue": queue}))
    return calls


def run_action(
    state: ServerState, session: Session, action: str, task_id: str, form: Mapping[str, str]
) -> tuple[str, str]:
    """Do ``action``; (task id to show next, message). Raises ApiError if refused."""
    if action == "clone":
        name = form.get("name", "").strip()
        body: dict[str, Any] = {"task": task_id, **({"new_task_name": name} if name else {})}
        new_id = str(call_api(state, session, "tasks.clone", body)["id"])
        return new_id, "cloned: this is the new draft"
    calls = action_calls(state.store.conn(), action, task_id, form)
    created = ""
    for name, planned in calls:
        body = {**planned, "model": created} if planned.get("model") == CREATED else planned
        reply = call_api(state, session, name, body)
        if name == "models.create":
            created = str(reply["id"])
    if action == "save" and not calls:
        return task_id, "nothing changed"
    return task_id, {"save": "saved", "abort": "abort requested"}.get(action, f"{action}: done")


def refusal(exc: ApiError) -> str:
    return exc.msg
