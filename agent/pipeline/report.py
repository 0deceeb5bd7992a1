"""The end of a task: an honest final status with a reason a user can act on."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import structlog

from agent.api.client import ApiClient
from agent.api.errors import ApiError

log = structlog.get_logger()


class Status(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


# Reasons the agent gives for a stop; the daemon and the abort watch use these names.
ABORTED_BY_USER = "aborted by user"
AGENT_SHUTDOWN = "agent shutdown"
# A task whose agent died under it (the server's watchdog uses the same reason).
LOST_WORKER = "lost worker"


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str = ""
    outside: bool = False  # set on the server from outside (Task.mark_failed()): it stands

    @classmethod
    def completed(cls) -> Outcome:
        return cls(Status.COMPLETED)

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(Status.FAILED, reason)

    @classmethod
    def stopped(cls, reason: str) -> Outcome:
        return cls(Status.STOPPED, reason)

    @classmethod
    def set_outside(cls, status: Status) -> Outcome:
        """The final status someone else set while the task ran: the agent reports nothing."""
        return cls(status, f"marked {status} from outside", outside=True)


async def report(api: ApiClient, task_id: str, outcome: Outcome) -> bool:
    """Send the final status. Returns False if the server refused it (logged, not raised):
    e.g. a user reset the task meanwhile, which the agent must not fight. A status set from
    outside (``outcome.outside``) stands: nothing is sent."""
    if outcome.outside:
        log.info("task finished", task_id=task_id, status=str(outcome.status), outside=True)
        return True
    try:
        if outcome.status is Status.COMPLETED:
            await api.completed(task_id)
        elif outcome.status is Status.STOPPED:
            await api.stopped(task_id, outcome.reason)
        else:
            await api.failed(task_id, outcome.reason)
    except ApiError as exc:
        log.warning("final status refused", task_id=task_id, status=outcome.status, error=str(exc))
        return False
    log.info("task finished", task_id=task_id, status=str(outcome.status), reason=outcome.reason)
    return True
