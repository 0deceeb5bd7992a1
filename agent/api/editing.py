"""Typed calls that derive a task from another (clone, parameter edits, input model swap)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.api.client import ApiClient
from agent.api.envelope import require


async def clone_task(api: ApiClient, task_id: str, name: str = "") -> str:
    """``tasks.clone``: a new ``created`` task with the source's script, parameters, models."""
    body: dict[str, Any] = {"task": task_id}
    if name:
        body["new_task_name"] = name
    data = await api.call("tasks.clone", body)
    new_id: str = require(data, "id", str, "tasks.clone")
    return new_id


async def set_hyperparams(api: ApiClient, task_id: str, values: Mapping[str, str]) -> None:
    """Set ``Section/name`` parameters (added if new, others kept), as the UI edits them."""
    items = []
    for key, value in values.items():
        section, _, name = key.partition("/")
        items.append({"section": section, "name": name, "value": value})
    await api.call("tasks.edit_hyper_params", {"task": task_id, "hyperparams": items})


async def input_model_names(api: ApiClient, task_id: str) -> list[str]:
    doc = await api.get_task_document(task_id)
    models = doc.get("models") or {}
    return [str(m.get("name", "")) for m in models.get("input") or []]


async def import_model(api: ApiClient, url: str, name: str) -> str:
    """Register weights at ``url`` as a ready model (``InputModel.import_model``'s request)."""
    data = await api.call("models.create", {"uri": url, "name": name, "ready": True})
    model_id: str = require(data, "id", str, "models.create")
    return model_id


async def set_input_model(api: ApiClient, task_id: str, name: str, model_id: str) -> None:
    await api.call(
        "tasks.add_or_update_model",
        {"task": task_id, "name": name, "model": model_id, "type": "input"},
    )
