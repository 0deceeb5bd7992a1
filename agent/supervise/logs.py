"""Shipping a task's console to the server: spool first, send in batches, never drop.

``LogShipper.write`` (any thread, never blocks on the network) appends the line to the task's
spool file; a side task reads the spool from the acknowledged offset, packs lines into log
events and sends them with ``events.add_batch``, then records the new offset. While the server
is down the side task keeps retrying with backoff; ``close`` waits for the spool to drain, and
when the deadline comes first the spool stays on disk and :func:`deliver_leftover_spools`
sends it at the next start.

Events follow clearml-agent's format: consecutive lines of one level are packed into one
event's ``msg`` (cut at 64 KiB); event timestamps strictly increase, so the server's
timestamp order is the order the lines were read in.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from agent.api.client import ApiClient
from agent.api.errors import ApiError, AuthError, ServerUnavailable
from agent.supervise.spool import (
    Record,
    Spool,
    SpoolBusy,
    SpoolError,
    leftover_spool_files,
    spool_name,
)

log = structlog.get_logger()

BATCH_BYTES = 512 * 1024  # spool bytes per add_batch request (about)
BATCH_LINES = 500  # this many unsent lines wake the sender before the time limit
MAX_REQUEST_LINES = 5000  # a backlog goes out in requests of about this many lines
MAX_REQUEST_RECORDS = 500  # from memory (after a disk error): records per request
FLUSH_INTERVAL_S = 0.5  # a line waits at most about this long before it is sent
MAX_EVENT_CHARS = 64 * 1024
RETRY_INITIAL_S = 0.5  # when the client itself gives up (a finite retry budget)
RETRY_MAX_S = 30.0
CLOSE_TIMEOUT_S = 30.0
MAX_SPOOL_GENERATIONS = 100  # runs of one task whose spools may wait for delivery at once
AGENT_PREFIX = "conveyor: "


def pack_events(
    records: Sequence[Record], task_id: str, worker: str, last_ms: int
) -> tuple[list[dict[str, Any]], int]:
    """Pure: log events for ``records`` (same-level runs joined, cut at 64 KiB at line ends), each
    stamped after ``last_ms``; and the last timestamp used."""
    events: list[dict[str, Any]] = []
    current: list[str] = []  # blocks of lines, each already joined
    size = 0
    level, first_ts = "", 0.0

    def emit() -> None:
        nonlocal last_ms
        last_ms = max(int(first_ts * 1000), last_ms + 1)
        events.append(
            {
                "type": "log",
                "task": task_id,
                "worker": worker,
                "level": level,
                "msg": "\n".join(current),
                "timestamp": last_ms,
            }
        )

    for record in records:
        for block in _blocks(record.lines, MAX_EVENT_CHARS):
            if current and (record.level != level or size + len(block) + 1 > MAX_EVENT_CHARS):
                emit()
                current, size = [], 0
            if not current:
                level, first_ts = record.level, record.ts
            current.append(block)
            size += len(block) + 1
    if current:
        emit()
    return events, last_ms


def _blocks(lines: Sequence[str], limit: int) -> list[str]:
    """``lines`` joined by newlines into texts of at most ``limit`` characters, cut between
    lines (a longer line is cut into pieces of ``limit``). Whole-record joins in the common
    case: no Python work per line."""
    joined = "\n".join(lines)
    if len(joined) <= limit:
        return [joined]
    blocks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        for piece in _cut(line, limit):
            if current and size + len(piece) > limit:
                blocks.append("\n".join(current))
                current, size = [], 0
            current.append(piece)
            size += len(piece) + 1
    blocks.append("\n".join(current))
    return blocks


def _cut(text: str, limit: int) -> list[str]:
    return [text[i : i + limit] for i in range(0, len(text), limit)] or [""]


class LogShipper:
    """The console of one task: ``write`` lines, ``async with`` it to ship them."""

    def __init__(
        self,
        api: ApiClient,
        task_id: str,
        worker: str,
        spool_dir: Path,
        *,
        close_timeout: float | None = CLOSE_TIMEOUT_S,
        spool: str | None = None,
    ) -> None:
        """``spool``: the name of an existing spool to deliver (a leftover); None for a run of
        the task, which takes the next free spool of the task if an earlier run's is busy."""
        self.api = api
        self.task_id = task_id
        self.worker = worker
        self.close_timeout = close_timeout
        self._spool_dir = spool_dir
        self._fixed_spool = spool is not None
        self._spool = Spool(spool_dir, task_id, spool)
        self._lock = threading.Lock()
        self._opened = False
        self._closed = False
        self._overflow: list[Record] | None = None  # records kept in memory after a disk error
        self._overflow_sent = 0  # records of it delivered
        self._unsent_lines = 0
        self._wake_asked = False
        self._last_ms = 0
        self._stalled = False  # the server refuses our credentials: keep the spool for later
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self.delivered_lines = 0

    # --- writing (any thread) ---------------------------------------------------------
    def write(self, line: str, level: str = "info", ts: float | None = None) -> None:
        """Keep one console line (see :meth:`write_lines`)."""
        self.write_lines((line,), level, ts)

    def write_lines(
        self, lines: Sequence[str], level: str = "info", ts: float | None = None
    ) -> None:
        """Keep console lines read together (one spool record); raises SpoolError once if the
        disk refuses them (they are still shipped from memory, and so are the ones after)."""
        ts = time.time() if ts is None else ts
        with self._lock:
            if self._closed:
                log.debug(
                    "console lines after close dropped", task_id=self.task_id, lines=len(lines)
                )
                return
            self._unsent_lines += len(lines)
            if self._overflow is not None:
                self._overflow.append(Record(-1, ts, level, lines))
            else:
                try:
                    self._ensure_open()
                    self._spool.append(ts, level, lines)
                except SpoolError:
                    self._overflow = [Record(-1, ts, level, lines)]
                    raise
            full = (
                self._unsent_lines >= BATCH_LINES
                or self._spool.size - self._spool.acked >= BATCH_BYTES
            )
            wake = full and not self._wake_asked
            self._wake_asked = self._wake_asked or wake
        if wake:  # once per sender pass: waking is a syscall (the loop's self-pipe)
            self._wake_sender()

    def _ensure_open(self) -> None:
        if self._opened:
            return
        generation = 0
        while True:
            try:
                self._spool.open(self.worker)
                break
            except SpoolBusy:
                # The previous run's spool, still being delivered (the task was requeued after
                # its agent died): this run's lines go to a spool of their own.
                generation += 1
                if self._fixed_spool or generation >= MAX_SPOOL_GENERATIONS:
                    raise
                self._spool = Spool(
                    self._spool_dir, self.task_id, spool_name(self.task_id, generation)
                )
        if generation:
            log.info("earlier spool of the task busy; using another", spool=str(self._spool.path))
        self._opened = True

    def _wake_sender(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the spool (resuming one left by an earlier run) and start sending."""
        with self._lock:
            self._ensure_open()
        self._loop = asyncio.get_running_loop()
        self._sender = asyncio.create_task(self._send_loop(), name=f"log-shipper:{self.task_id}")
        self._sender.add_done_callback(self._sender_ended)

    def _sender_ended(self, task: asyncio.Task[None]) -> None:
        """Say at once when the side task dies; lines keep going to the spool meanwhile."""
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "log shipper died; lines stay in the spool",
                task_id=self.task_id,
                error=repr(task.exception()),
            )

    async def __aenter__(self) -> LogShipper:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(self.close_timeout)

    async def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> bool:
        """Send everything still spooled, waiting at most ``timeout`` s (None: no limit). True
        when all was delivered (the spool is removed); False keeps the spool for the next
        start."""
        with self._lock:
            self._closed = True
        if self._sender is None:
            return self._finish(delivered=False)
        self._closing.set()
        self._wake.set()
        try:
            done, _ = await asyncio.wait({self._sender}, timeout=timeout)
        except asyncio.CancelledError:
            # Not left behind retrying (and holding the spool) when the waiter gives up.
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._finish(delivered=False)
            raise
        if not done:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            log.warning("log delivery incomplete at close; spool kept", task_id=self.task_id)
            return self._finish(delivered=False)
        if self._sender.cancelled() or self._sender.exception() is not None:
            return self._finish(delivered=False)  # already logged by _sender_ended
        return self._finish(delivered=not self._stalled and self._all_sent())

    def _finish(self, delivered: bool) -> bool:
        with self._lock:
            if delivered:
                self._spool.remove()
            else:
                self._spool.release()
            self._opened = False
        return delivered

    def _all_sent(self) -> bool:
        with self._lock:
            overflow = len(self._overflow or [])
            return self._spool.acked >= self._spool.size and self._overflow_sent >= overflow

    # --- sending (the side task) -----------------------------------------------------------
    async def _send_loop(self) -> None:
        while True:
            closing = self._closing.is_set()
            await self._send_available()
            if closing or self._stalled:
                return  # a close was asked before this pass: everything written is sent
            if not self._closing.is_set():
                self._wake.clear()
                # woken by a full batch, or the time limit of a batch: send what there is
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)

    async def _send_available(self) -> None:
        while not self._stalled:
            with self._lock:
                self._unsent_lines, self._wake_asked = 0, False
            records, offset = self._spool.read(self._spool.acked, BATCH_BYTES, MAX_REQUEST_LINES)
            from_memory = 0
            if not records:
                records = self._overflow_batch()
                from_memory = len(records)
            if not records:
                return
            if not await self._deliver(records):
                return
            if from_memory:
                self._overflow_sent += from_memory
            else:
                self._spool.ack(offset)
            self.delivered_lines += sum(len(record.lines) for record in records)

    def _overflow_batch(self) -> list[Record]:
        with self._lock:
            if self._overflow is None:
                return []
            batch = self._overflow[self._overflow_sent : self._overflow_sent + MAX_REQUEST_RECORDS]
            return batch

    async def _deliver(self, records: Sequence[Record]) -> bool:
        """Send until accepted; False when the server refuses our credentials (stall)."""
        events, last_ms = pack_events(records, self.task_id, self.worker, self._last_ms)
        delay = RETRY_INITIAL_S
        while True:
            try:
                await self.api.add_events(events)
            except ServerUnavailable as exc:
                log.warning(
                    "log delivery waiting for the server", task_id=self.task_id, error=str(exc)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except AuthError as exc:
                log.error("log delivery refused; spool kept", task_id=self.task_id, error=str(exc))
                self._stalled = True
                return False
            except ApiError as exc:
                # A permanent refusal (task deleted, events rejected): retrying cannot help and
                # would block every later line. Say so and go on.
                log.error(
                    "log events rejected", task_id=self.task_id, lines=len(records), error=str(exc)
                )
            self._last_ms = last_ms
            return True


class TaskConsole:
    """The pipeline's :class:`~agent.pipeline.console.Console` on top of a task's shipper."""

    def __init__(self, shipper: LogShipper) -> None:
        self.shipper = shipper

    def info(self, message: str) -> None:
        self.shipper.write(AGENT_PREFIX + message, "info")

    def error(self, message: str) -> None:
        self.shipper.write(AGENT_PREFIX + message, "error")


async def deliver_leftover_spools(
    spool_dir: Path, client: ApiClient, timeout: float | None = None
) -> int:
    """Send what earlier runs left in ``spool_dir``; how many spools were fully delivered.

    Spools in use by another process are skipped. ``timeout`` bounds the wait per spool (None:
    until delivered, which with a forever-retrying client means until the server answers).
    """
    if not spool_dir.is_dir():
        return 0
    delivered = 0
    for left in leftover_spool_files(spool_dir):
        task_id = left.task_id
        shipper = LogShipper(client, task_id, left.worker, spool_dir, spool=left.name)
        try:
            await shipper.start()
        except SpoolBusy:
            continue
        except SpoolError as exc:
            log.error("leftover spool unreadable", task_id=task_id, error=str(exc))
            continue
        log.info("delivering leftover log spool", task_id=task_id)
        if await shipper.close(timeout):
            delivered += 1
    return delivered
