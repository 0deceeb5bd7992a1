"""Watching for the end of a task from outside: a user's abort or the agent shutting down.

A user aborts with ``tasks.stop``: the server sets ``status_message = "stopping"`` (or moves the
task out of ``in_progress``). The watch polls the task's status and, on either sign, records why
and sets its event; the supervise stage then terminates the process group. The daemon's second
SIGTERM trips the same watch with "agent shutdown".
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from agent.api.client import ApiClient
from agent.api.errors import ApiError, NotFoundError
from agent.pipeline.report import ABORTED_BY_USER, AGENT_SHUTDOWN
from agent.supervise.sidetask import SideTask

log = structlog.get_logger()

RUNNING = "in_progress"
STOPPING = "stopping"


def abort_reason_from_status(status: str, status_message: str) -> str | None:
    """Pure: the reason to abort given what the server says of the task, or None to go on."""
    if status == RUNNING and status_message.strip().lower() != STOPPING:
        return None
    if status == RUNNING:
        return ABORTED_BY_USER
    if status in ("stopped", "queued", "created"):
        return f"{ABORTED_BY_USER} (task was {'reset' if status == 'created' else status})"
    return f"task status changed to {status!r} on the server"


def superseded_reason(attempt: int | None, server_attempt: int) -> str | None:
    """Pure: the reason to stop when the server moved the task to a later attempt (this agent
    was cut off long enough for the watchdog to requeue it), or None."""
    if attempt is None or server_attempt <= attempt:
        return None
    return (
        f"the task was requeued meanwhile (attempt {server_attempt} owns it now; this agent "
        "had lost contact with the server)"
    )


class AbortWatch(SideTask):
    """Polls the task's status as a named side task; ``event`` is set when the task must end."""

    def __init__(
        self, api: ApiClient, task_id: str, shutdown: asyncio.Event, interval: float
    ) -> None:
        self.api = api
        self.task_id = task_id
        self.shutdown = shutdown
        self.interval = interval
        self.event = asyncio.Event()
        self.reason: str | None = None
        self.attempt: int | None = None  # this run's attempt number, once known
        self.superseded = False  # tripped because a later attempt owns the task

    def trip(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.info("abort", task_id=self.task_id, reason=reason)
        self.event.set()

    @property
    def tripped(self) -> bool:
        return self.event.is_set()

    @property
    def side_name(self) -> str:
        return f"abort-watch:{self.task_id}"

    async def _run(self) -> None:
        while not self.event.is_set():
            if self.shutdown.is_set():
                self.trip(AGENT_SHUTDOWN)
                return
            reason = await self._check_server()
            if reason is not None:
                self.trip(reason)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shutdown.wait(), self.interval)

    async def _check_server(self) -> str | None:
        try:
            status, message, server_attempt = await self.api.task_progress(self.task_id)
        except NotFoundError:
            return f"{ABORTED_BY_USER} (task was deleted)"
        except ApiError as exc:
            # A transient refusal must not abort a running task; the next poll retries.
            log.warning("abort watch: status poll failed", task_id=self.task_id, error=str(exc))
            return None
        superseded = superseded_reason(self.attempt, server_attempt)
        if superseded is not None:
            self.superseded = True  # set before the trip: the run then reports nothing
            return superseded
        return abort_reason_from_status(status, message)
