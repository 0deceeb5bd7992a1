"""Pure helpers for task documents: defaults, field validation, edit merging, projections.

The SDK parses responses into typed classes where a null object silently becomes None and
crashes later, so every object-valued field is always present as an object.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from agent.server.errors import bad_request

TASK_TYPES = frozenset(
    {
        "training",
        "testing",
        "inference",
        "data_processing",
        "application",
        "monitor",
        "controller",
        "optimizer",
        "service",
        "qc",
        "custom",
    }
)
OBJECT_FIELDS = ("script", "execution", "output", "runtime", "container", "hyperparams")
OBJECT_FIELDS_ALL = (*OBJECT_FIELDS, "configuration", "last_metrics")
MERGED_ON_EDIT = ("script", "execution", "output", "models")  # shallow merge
REPLACED_ON_EDIT = ("hyperparams", "configuration", "runtime", "container")
STRING_FIELDS = ("name", "comment", "parent", "project", "status_message", "status_reason")
LIST_FIELDS = ("tags", "system_tags")
# Fields a client may always edit, whatever the task status.
FREE_FIELDS = frozenset({"name", "comment", "tags", "system_tags", "project", "runtime"})
EDITABLE = (*STRING_FIELDS[:4], *LIST_FIELDS, "type", *MERGED_ON_EDIT, *REPLACED_ON_EDIT)
# Stored as sent (an object): ``input`` is ClearML's legacy input view, sent by the SDK's
# Task.import_task with the rest of an exported task.
OPAQUE_OBJECTS = ("script", "execution", "output", "runtime", "input")
# Every task field ``check_fields`` reads: what tasks.create and tasks.edit take.
TASK_FIELDS = frozenset(
    {*STRING_FIELDS[:4], *LIST_FIELDS, "type", *OPAQUE_OBJECTS, "container", "models"}
    | {"hyperparams", "configuration", "output_dest"}
)


def normalize_task(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` with every field a client relies on present and of the right type."""
    out = dict(doc)
    for name in OBJECT_FIELDS_ALL:
        if not isinstance(out.get(name), dict):
            out[name] = {}
    models = out.get("models")
    models = dict(models) if isinstance(models, dict) else {}
    for kind in ("input", "output"):
        if not isinstance(models.get(kind), list):
            models[kind] = []
    out["models"] = models
    execution = dict(out["execution"])
    if not isinstance(execution.get("artifacts"), list):
        execution["artifacts"] = []
    out["execution"] = execution
    script = dict(out["script"])
    if not isinstance(script.get("requirements"), dict):  # clearml-agent reads .get("pip")
        script["requirements"] = {}
    out["script"] = script
    for name in LIST_FIELDS:
        if not isinstance(out.get(name), list):
            out[name] = []
    for name in ("comment", "status_message", "status_reason", "last_worker"):
        if not isinstance(out.get(name), str):
            out[name] = ""
    out.setdefault("type", "training")
    out.setdefault("status", "created")
    out.setdefault("last_iteration", 0)
    return out


def _check_object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"field '{name}' must be an object, got {_type_name(value)}")
    return value


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_models(value: Any) -> dict[str, Any]:
    models = _check_object("models", value)
    for kind in ("input", "output"):
        items = models.get(kind)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise bad_request(f"field 'models.{kind}' must be a list of objects")
        for item in items:
            for key in ("name", "model"):
                if not isinstance(item.get(key), str):
                    raise bad_request(f"each of 'models.{kind}' needs a string '{key}'")
    return models


def _check_sections(name: str, value: Any, nested: bool) -> dict[str, Any]:
    """hyperparams: {section: {param: {...}}}; configuration: {name: {...}}."""
    sections = _check_object(name, value)
    for key, section in sections.items():
        _check_object(f"{name}.{key}", section)
        if nested:
            for param, item in section.items():
                _check_object(f"{name}.{key}.{param}", item)
    return sections


def check_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The task fields (``TASK_FIELDS``) present in ``body``, type-checked; the endpoints
    that call it refuse any other field first (``accepts``)."""
    out: dict[str, Any] = {}
    for name in STRING_FIELDS[:4]:
        if body.get(name) is not None:
            if not isinstance(body[name], str):
                raise bad_request(f"field '{name}' must be a string, got {_type_name(body[name])}")
            out[name] = body[name]
    for name in LIST_FIELDS:
        if body.get(name) is not None:
            value = body[name]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad_request(f"field '{name}' must be a list of strings")
            out[name] = list(value)
    if body.get("type") is not None:
        if body["type"] not in TASK_TYPES:
            raise bad_request(
                f"field 'type' must be one of {', '.join(sorted(TASK_TYPES))}, got {body['type']!r}"
            )
        out["type"] = body["type"]
    for name in OPAQUE_OBJECTS:
        if body.get(name) is not None:
            out[name] = _check_object(name, body[name])
    if body.get("container") is not None:
        container = _check_object("container", body["container"])
        for key, item in container.items():
            if item is not None and not isinstance(item, str):
                raise bad_request(f"field 'container.{key}' must be a string")
        out["container"] = container
    if body.get("models") is not None:
        out["models"] = _check_models(body["models"])
    if body.get("hyperparams") is not None:
        out["hyperparams"] = _check_sections("hyperparams", body["hyperparams"], nested=True)
    if body.get("configuration") is not None:
        out["configuration"] = _check_sections("configuration", body["configuration"], False)
    if body.get("output_dest") is not None:
        if not isinstance(body["output_dest"], str):
            raise bad_request("field 'output_dest' must be a string")
        output = dict(out.get("output", {}))
        output["destination"] = body["output_dest"]
        out["output"] = output
    return out


def apply_edit(doc: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The document after an edit: merge script/execution/output/models, replace the rest."""
    out = copy.deepcopy(dict(doc))
    for name, value in changes.items():
        if name in MERGED_ON_EDIT:
            merged = dict(out.get(name) or {})
            merged.update(value)
            out[name] = merged
        else:
            out[name] = copy.deepcopy(value)
    return out


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _project(doc: Mapping[str, Any], path: list[str], out: dict[str, Any]) -> None:
    """Copy one dotted field into ``out`` as a projection does: every object on the way is kept
    (empty where the rest of the path is missing), so ``runtime.version`` of a task without a
    version gives ``runtime: {}`` and a client reading ``runtime.get("version")`` works."""
    current: Any = doc
    for depth, part in enumerate(path):
        if not isinstance(current, Mapping) or part not in current:
            return
        current = current[part]
        if depth == len(path) - 1:
            out[part] = copy.deepcopy(current)
            return
        if not isinstance(current, Mapping):
            return
        child = out.setdefault(part, {})
        if not isinstance(child, dict):
            return
        out = child


def project_fields(doc: Mapping[str, Any], only_fields: Iterable[str] | None) -> dict[str, Any]:
    """Keep only the (dotted) fields asked for, plus ``id`` (see ``_project``)."""
    if not only_fields:
        return dict(doc)
    out: dict[str, Any] = {"id": doc.get("id")}
    for field in only_fields:
        _project(doc, field.split("."), out)
    return out
