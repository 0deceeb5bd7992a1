"""Parts of a task edited on their own: hyperparameters, configuration items, models, artifacts."""

from __future__ import annotations

from typing import Any

from agent.server.accepts import accepts
from agent.server.errors import INVALID_MODEL_ID, INVALID_TASK_STATUS, ApiError, bad_request
from agent.server.fields import opt_bool, opt_int, opt_list, opt_str, opt_str_list, req_str
from agent.server.lifecycle import CREATED, IMMUTABLE, IN_PROGRESS
from agent.server.registry import Call, endpoint
from agent.server.taskstore import load_task, save_task

_REPLACE_MODES = ("none", "section", "all")
# Artifacts may change in every status here, so ``force`` changes nothing.
_ARTIFACTS = accepts("task artifacts", ignored="force")


def _check_editable(doc: dict[str, Any], force: bool, what: str) -> None:
    status = doc["status"]
    if status in IMMUTABLE or (status not in (CREATED, IN_PROGRESS) and not force):
        raise ApiError(
            400,
            INVALID_TASK_STATUS,
            f"invalid task status: cannot edit {what} of a {status!r} task",
        )


def _items(call: Call, name: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    items = opt_list(call.body, name)
    if items is None:
        raise bad_request(f"field '{name}' is required")
    for item in items:
        if not isinstance(item, dict):
            raise bad_request(f"each item of '{name}' must be an object")
        for key in keys:
            if not isinstance(item.get(key), str):
                raise bad_request(f"each item of '{name}' needs a string '{key}'")
    return items


@endpoint("tasks.get_hyper_params")
def get_hyper_params(call: Call) -> dict[str, Any]:
    ids = opt_str_list(call.body, "tasks")
    if not ids:
        raise bad_request("field 'tasks' is required")
    conn = call.store.conn()
    params = []
    for task_id in ids:
        doc = load_task(conn, task_id)
        flat = [
            {"section": section, "name": name, **item}
            for section, items in doc["hyperparams"].items()
            for name, item in items.items()
        ]
        params.append({"task": task_id, "hyperparams": flat})
    return {"params": params}


@endpoint("tasks.edit_hyper_params", accepts=accepts("task hyperparams replace_hyperparams force"))
def edit_hyper_params(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    items = _items(call, "hyperparams", ("section", "name"))
    replace = opt_str(call.body, "replace_hyperparams", "none")
    if replace not in _REPLACE_MODES:
        raise bad_request(f"field 'replace_hyperparams' must be one of {', '.join(_REPLACE_MODES)}")
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        _check_editable(doc, opt_bool(call.body, "force"), "hyperparams")
        hyperparams: dict[str, dict[str, Any]] = {} if replace == "all" else doc["hyperparams"]
        if replace == "section":
            for section in {i["section"] for i in items}:
                hyperparams[section] = {}
        for item in items:
            hyperparams.setdefault(item["section"], {})[item["name"]] = dict(item)
        doc["hyperparams"] = hyperparams
        save_task(conn, doc)
    return {"updated": 1}


@endpoint("tasks.delete_hyper_params", accepts=accepts("task hyperparams force"))
def delete_hyper_params(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    keys = _items(call, "hyperparams", ("section",))
    deleted = 0
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        _check_editable(doc, opt_bool(call.body, "force"), "hyperparams")
        for key in keys:
            section = doc["hyperparams"].get(key["section"])
            if section is None:
                continue
            if key.get("name"):
                deleted += 1 if section.pop(key["name"], None) is not None else 0
            else:
                deleted += len(section)
                del doc["hyperparams"][key["section"]]
        save_task(conn, doc)
    return {"deleted": deleted}


@endpoint("tasks.get_configurations")
def get_configurations(call: Call) -> dict[str, Any]:
    ids = opt_str_list(call.body, "tasks") or []
    names = opt_str_list(call.body, "names")
    conn = call.store.conn()
    out = []
    for task_id in ids:
        items = load_task(conn, task_id)["configuration"]
        wanted = [v for k, v in items.items() if names is None or k in names]
        out.append({"task": task_id, "configuration": wanted})
    return {"configurations": out}


@endpoint("tasks.get_configuration_names")
def get_configuration_names(call: Call) -> dict[str, Any]:
    ids = opt_str_list(call.body, "tasks") or []
    conn = call.store.conn()
    return {
        "configurations": [
            {"task": t, "names": sorted(load_task(conn, t)["configuration"])} for t in ids
        ]
    }


@endpoint(
    "tasks.edit_configuration", accepts=accepts("task configuration replace_configuration force")
)
def edit_configuration(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    items = _items(call, "configuration", ("name",))
    replace = opt_bool(call.body, "replace_configuration")
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        _check_editable(doc, opt_bool(call.body, "force"), "configuration")
        configuration = {} if replace else doc["configuration"]
        for item in items:
            configuration[item["name"]] = dict(item)
        doc["configuration"] = configuration
        save_task(conn, doc)
    return {"updated": 1}


@endpoint("tasks.add_or_update_model", accepts=accepts("task name model type iteration"))
def add_or_update_model(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    name = req_str(call.body, "name")
    model_id = req_str(call.body, "model")
    kind = req_str(call.body, "type")
    if kind not in ("input", "output"):
        raise bad_request("field 'type' must be 'input' or 'output'")
    iteration = opt_int(call.body, "iteration")
    with call.store.write() as conn:
        if conn.execute("SELECT 1 FROM models WHERE id=?", (model_id,)).fetchone() is None:
            raise bad_request(f"invalid model id: no model {model_id!r}", INVALID_MODEL_ID)
        doc = load_task(conn, task_id)
        entry: dict[str, Any] = {"name": name, "model": model_id}
        if iteration is not None:
            entry["updated"] = iteration
        models = [m for m in doc["models"][kind] if m.get("name") != name]
        doc["models"] = {**doc["models"], kind: [*models, entry]}
        save_task(conn, doc)
    return {"updated": 1}


@endpoint("tasks.delete_models", accepts=accepts("task models"))
def delete_models(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    keys = _items(call, "models", ("name", "type"))
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        models = dict(doc["models"])
        for key in keys:
            kind = key["type"]
            models[kind] = [m for m in models.get(kind, []) if m.get("name") != key["name"]]
        doc["models"] = models
        save_task(conn, doc)
    return {"updated": 1}


@endpoint("tasks.add_or_update_artifacts", accepts=_ARTIFACTS)
def add_or_update_artifacts(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    artifacts = _items(call, "artifacts", ("key", "type"))
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        keyed = {(a.get("key"), a.get("mode", "output")): a for a in doc["execution"]["artifacts"]}
        for artifact in artifacts:
            keyed[(artifact["key"], artifact.get("mode", "output"))] = artifact
        doc["execution"] = {**doc["execution"], "artifacts": list(keyed.values())}
        save_task(conn, doc)
    return {"updated": 1}


@endpoint("tasks.delete_artifacts", accepts=_ARTIFACTS)
def delete_artifacts(call: Call) -> dict[str, Any]:
    task_id = req_str(call.body, "task")
    keys = _items(call, "artifacts", ("key",))
    with call.store.write() as conn:
        doc = load_task(conn, task_id)
        drop = {(k["key"], k.get("mode", "output")) for k in keys}
        kept = [
            a
            for a in doc["execution"]["artifacts"]
            if (a.get("key"), a.get("mode", "output")) not in drop
        ]
        deleted = len(doc["execution"]["artifacts"]) - len(kept)
        doc["execution"] = {**doc["execution"], "artifacts": kept}
        save_task(conn, doc)
    return {"deleted": deleted}
