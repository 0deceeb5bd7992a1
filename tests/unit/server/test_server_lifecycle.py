"""The task state machine as data."""

from __future__ import annotations

import pytest

from agent.server import lifecycle
from agent.server.errors import ApiError


@pytest.mark.parametrize(
    ("action", "current", "target"),
    [
        ("started", "created", "in_progress"),
        ("started", "queued", "in_progress"),
        ("completed", "in_progress", "completed"),
        ("stopped", "in_progress", "stopped"),
        ("failed", "in_progress", "failed"),
        ("enqueue", "created", "queued"),
        ("enqueue", "stopped", "queued"),
        ("enqueue", "failed", "queued"),
        ("dequeue", "queued", "created"),
        ("reset", "failed", "created"),
        ("publish", "completed", "published"),
    ],
)
def test_allowed_transitions(action: str, current: str, target: str) -> None:
    assert lifecycle.check(action, current, force=False) == target


@pytest.mark.parametrize(
    ("action", "current"),
    [
        ("enqueue", "completed"),
        ("enqueue", "in_progress"),
        ("started", "completed"),
        ("completed", "created"),
        ("reset", "completed"),
        ("dequeue", "created"),
    ],
)
def test_refused_without_force(action: str, current: str) -> None:
    with pytest.raises(ApiError) as info:
        lifecycle.check(action, current, force=False)
    assert (info.value.code, info.value.subcode) == (400, 110)
    assert current in info.value.msg and "force" in info.value.msg


def test_force_lifts_the_source_rule_except_for_published() -> None:
    assert lifecycle.check("stopped", "completed", force=True) == "stopped"
    assert lifecycle.check("reset", "completed", force=True) == "created"
    for action in ("started", "reset", "stopped", "failed"):
        with pytest.raises(ApiError):
            lifecycle.check(action, "published", force=True)
