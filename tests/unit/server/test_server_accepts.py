"""Every field the clearml SDK can send a write endpoint is declared by that endpoint.

Declared: implemented, ignored as presentation or metadata, or taken only switched off."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

from agent.server import registry
from agent.server.accepts import accepts, check
from agent.server.app import create_app  # noqa: F401 (registers every endpoint)
from agent.server.errors import ApiError
from agent.server.events import EVENT_FIELDS

WRITES = sorted(name for name, e in registry.endpoints().items() if e.accepts is not None)
# The SDK's event classes (clearml/backend_api/services/v2_23/events.py) by event type.
SDK_EVENTS = {
    "log": "TaskLogEvent",
    "training_stats_scalar": "MetricsScalarEvent",
    "training_stats_vector": "MetricsVectorEvent",
    "training_debug_image": "MetricsImageEvent",
    "plot": "MetricsPlotEvent",
}


def _sdk_request(endpoint: str) -> Any:
    """The SDK 2.1.12 request class for ``service.action`` (API 2.23: what it uses here)."""
    service, action = endpoint.split(".")
    module = importlib.import_module(f"clearml.backend_api.services.v2_23.{service}")
    name = "".join(part.capitalize() for part in action.split("_")) + "Request"
    return getattr(module, name)


def test_write_endpoints_are_declared() -> None:
    assert {"tasks.create", "tasks.edit", "models.update_for_task", "workers.register"} <= set(
        WRITES
    )


@pytest.mark.parametrize("endpoint", WRITES)
def test_every_sdk_field_is_declared(endpoint: str) -> None:
    spec = registry.endpoints()[endpoint].accepts
    assert spec is not None
    sent = set(_sdk_request(endpoint)._schema.get("properties", {}))
    assert sent <= spec.known(), sorted(sent - spec.known())


@pytest.mark.parametrize(("kind", "cls"), sorted(SDK_EVENTS.items()))
def test_every_sdk_event_field_is_declared(kind: str, cls: str) -> None:
    module = importlib.import_module("clearml.backend_api.services.v2_23.events")
    sent = set(getattr(module, cls)._schema["properties"])
    sent |= set(module.AddRequest._schema["properties"])  # model_event, allow_locked
    assert sent <= EVENT_FIELDS[kind].known(), sorted(sent - EVENT_FIELDS[kind].known())


def test_check_refuses_unknown_and_switched_on_fields() -> None:
    spec = accepts("task", ignored="shown", off_only={"flag": "not here"})
    check("x.y", {"task": "t", "shown": 1, "flag": False, "method": "get"}, spec)
    check("x.y", {"flag": "false"}, spec)
    with pytest.raises(ApiError) as info:
        check("x.y", {"task": "t", "other": 1}, spec)
    assert (info.value.code, info.value.subcode) == (400, 12)
    assert "field 'other' is not supported by x.y" in info.value.msg
    with pytest.raises(ApiError) as info:
        check("x.y", {"flag": True}, spec)
    assert info.value.msg == "field 'flag' of x.y: true is not supported: not here"


def _defaults(cls: Any) -> dict[str, Any]:
    """What a request sends unasked: its constructor's non-None defaults (``DeleteRequest``
    sends ``delete_external_artifacts: true``, ``models.CreateRequest`` ``public: false``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default not in (None, p.empty)}


@pytest.mark.parametrize("endpoint", WRITES)
def test_what_the_sdk_sends_by_default_is_taken(endpoint: str) -> None:
    spec = registry.endpoints()[endpoint].accepts
    assert spec is not None
    check(endpoint, _defaults(_sdk_request(endpoint)), spec)


def test_defaults_are_found() -> None:
    assert _defaults(_sdk_request("tasks.delete"))["delete_external_artifacts"] is True
