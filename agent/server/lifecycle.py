"""The task state machine, as data: which status changes are allowed from where.

``force`` lifts the source restriction (as the SDK uses it: ``execute_remotely`` stops a
completed task with ``force`` before enqueueing it), except that published tasks are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.server.errors import INVALID_TASK_STATUS, ApiError

CREATED = "created"
QUEUED = "queued"
IN_PROGRESS = "in_progress"
STOPPED = "stopped"
COMPLETED = "completed"
FAILED = "failed"
PUBLISHED = "published"
PUBLISHING = "publishing"
CLOSED = "closed"
UNKNOWN = "unknown"

ALL_STATUSES = frozenset(
    {CREATED, QUEUED, IN_PROGRESS, STOPPED, COMPLETED, FAILED, PUBLISHED, PUBLISHING, CLOSED}
)
IMMUTABLE = frozenset({PUBLISHED, PUBLISHING})


@dataclass(frozen=True)
class Transition:
    action: str  # the endpoint's action name, for messages
    target: str
    sources: frozenset[str]  # allowed without force


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        Transition("started", IN_PROGRESS, frozenset({CREATED, QUEUED, IN_PROGRESS})),
        Transition("completed", COMPLETED, frozenset({IN_PROGRESS, STOPPED})),
        Transition("stopped", STOPPED, frozenset({IN_PROGRESS, QUEUED, CREATED, STOPPED})),
        Transition("failed", FAILED, frozenset({CREATED, QUEUED, IN_PROGRESS, STOPPED})),
        Transition("enqueue", QUEUED, frozenset({CREATED, STOPPED, FAILED, QUEUED})),
        Transition("dequeue", CREATED, frozenset({QUEUED})),
        Transition(
            "reset", CREATED, frozenset({CREATED, QUEUED, IN_PROGRESS, STOPPED, FAILED, CLOSED})
        ),
        Transition("publish", PUBLISHED, frozenset({COMPLETED, STOPPED})),
        Transition("close", CLOSED, frozenset({COMPLETED, STOPPED, FAILED})),
    )
}


def allowed(action: str, current: str, force: bool) -> bool:
    transition = TRANSITIONS[action]
    if current in transition.sources:
        return True
    return force and current not in IMMUTABLE


def check(action: str, current: str, force: bool) -> str:
    """The target status, or a 400/110 saying why the change is refused."""
    if not allowed(action, current, force):
        transition = TRANSITIONS[action]
        hint = "" if current in IMMUTABLE else " (pass force=true to override)"
        raise ApiError(
            400,
            INVALID_TASK_STATUS,
            f"invalid task status: cannot {action} a task that is {current!r}; "
            f"allowed from {', '.join(sorted(transition.sources))}{hint}",
        )
    return TRANSITIONS[action].target
