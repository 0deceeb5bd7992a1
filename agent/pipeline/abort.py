"""Watching for the end of a task from outside: a user's abort or the agent shutting down.

A user aborts with ``tasks.stop``: the server sets ``status_message = "stopping"`` (or moves the
task out of ``in_progress``). The watch polls the task's status and, on either sign, records why
and sets its event; the supervise stage then ends the process group. The daemon's second SIGTERM
trips the same watch with "agent shutdown".

A final status set from outside (``Task.mark_failed()``, ``tasks.completed`` from another
process) stands: the watch records it in :attr:`AbortWatch.outside` and the pipeline stops the
process without reporting a status of its own.

Abort callbacks (``Task.register_abort_callback`` in clearml 2.1.12): the SDK records
``runtime._abort_callback_timeout`` and ``_abort_poll_freq`` on its task, polls its own status
(every ``_abort_poll_freq`` s, 15 in the SDK), runs the callback when it sees the stop, then sets
``runtime._abort_callback_completed``. When a task has one, the watch knows of the stop at once
(:attr:`AbortWatch.reason`) but trips only once the callback has completed, or after
``timeout + poll_freq`` (at most ``CALLBACK_WAIT_MAX_S``), as clearml-agent does: the process is
not signalled while its callback runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import structlog

from agent.api.client import ApiClient
from agent.api.errors import ApiError, NotFoundError
from agent.pipeline.console import Console
from agent.pipeline.report import ABORTED_BY_USER, AGENT_SHUTDOWN, Status
from agent.supervise.sidetask import SideTask

log = structlog.get_logger()

RUNNING = "in_progress"
STOPPING = "stopping"
# The statuses a user (or the task's own SDK) may set from outside that end a task for good.
OUTSIDE_FINAL = {"completed": Status.COMPLETED, "failed": Status.FAILED, "stopped": Status.STOPPED}
# The SDK's runtime properties of an abort callback (clearml DevWorker).
CALLBACK_TIMEOUT = "_abort_callback_timeout"
CALLBACK_POLL = "_abort_poll_freq"
CALLBACK_DONE = "_abort_callback_completed"
CALLBACK_WAIT_MAX_S = 1800.0  # clearml-agent's agent.abort_callback_max_timeout default


def abort_reason_from_status(status: str, status_message: str) -> str | None:
    """Pure: the reason to abort given what the server says of the task, or None to go on."""
    if status == RUNNING and status_message.strip().lower() != STOPPING:
        return None
    if status == RUNNING:
        return ABORTED_BY_USER
    if status in ("stopped", "queued", "created"):
        return f"{ABORTED_BY_USER} (task was {'reset' if status == 'created' else status})"
    return f"task status changed to {status!r} on the server"


def outside_final_status(status: str) -> Status | None:
    """Pure: the final status someone else set on a running task, which the agent leaves as it
    is (None: not a final status, e.g. the task was reset or re-queued)."""
    return OUTSIDE_FINAL.get(status)


def callback_wait(runtime: Mapping[str, Any]) -> float | None:
    """Pure: how long to wait for the task's abort callback, from its ``runtime`` (None: the task
    registered none, or removed it: the SDK then records a timeout of -1)."""
    try:
        timeout = float(runtime.get(CALLBACK_TIMEOUT) or 0)
        poll = float(runtime.get(CALLBACK_POLL) or 0)
    except (TypeError, ValueError):
        return None
    if timeout <= 0:
        return None
    return min(timeout + max(poll, 0.0), CALLBACK_WAIT_MAX_S)


def callback_done(runtime: Mapping[str, Any]) -> bool:
    """Pure: the SDK says the abort callback has completed."""
    return bool(runtime.get(CALLBACK_DONE))


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
    """Polls the task's status as a named side task; ``event`` is set when the process must end.

    ``reason`` is set as soon as a stop is known (even while an abort callback still runs);
    ``outside`` when a final status was set from outside and must stand.
    """

    def __init__(
        self,
        api: ApiClient,
        task_id: str,
        shutdown: asyncio.Event,
        interval: float,
        console: Console | None = None,
    ) -> None:
        self.api = api
        self.task_id = task_id
        self.shutdown = shutdown
        self.interval = interval
        self.console = console
        self.event = asyncio.Event()
        self.reason: str | None = None
        self.outside: Status | None = None
        self.running = False  # the task's process has started: only it can have a callback
        self.attempt: int | None = None  # this run's attempt number, once known
        self.superseded = False  # tripped because a later attempt owns the task

    def note(self, reason: str) -> None:
        """A stop is known (first reason wins); the process is not signalled yet."""
        if self.reason is None:
            self.reason = reason
            log.info("abort", task_id=self.task_id, reason=reason)

    def trip(self, reason: str) -> None:
        self.note(reason)
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
                self.note(reason)
                if not self.superseded:  # another attempt owns the task: stop at once
                    await self._wait_for_callback()
                self.trip(reason)
                return
            await self._pause()

    async def _pause(self) -> None:
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
        reason = abort_reason_from_status(status, message)
        if reason is not None:
            self.outside = outside_final_status(status)
        return reason

    async def _runtime(self) -> Mapping[str, Any]:
        try:
            docs = await self.api.list_tasks(id=[self.task_id], only_fields=["runtime"])
        except ApiError as exc:
            log.warning("abort watch: runtime poll failed", task_id=self.task_id, error=str(exc))
            return {}
        runtime = docs[0].get("runtime") if docs else None
        return runtime if isinstance(runtime, dict) else {}

    async def _wait_for_callback(self) -> None:
        """Give the task's abort callback its time: until the SDK says it completed, its
        timeout passes, or the agent shuts down."""
        if not self.running:  # stopped while being prepared: no callback can be registered
            return
        wait = callback_wait(await self._runtime())
        if wait is None:
            return
        self._say(f"waiting up to {wait:g} s for the task's abort callback")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not self.shutdown.is_set():
            if callback_done(await self._runtime()):
                self._say("the task's abort callback completed")
                return
            await self._pause()
        self._say("stopping the task without waiting longer for its abort callback")

    def _say(self, line: str) -> None:
        log.info("abort callback", task_id=self.task_id, note=line)
        if self.console is not None:
            self.console.info(line)
