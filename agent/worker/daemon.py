"""The daemon: register, poll the queues, claim, run tasks in slots, heartbeat, drain, exit.

Shutdown order (first signal, then second):
1. SIGTERM/SIGINT #1 sets ``stopping``: no new claims; running tasks finish (drain) for up to
   ``drain_timeout`` seconds, after which they are aborted as on a second signal.
2. SIGTERM/SIGINT #2 sets ``shutdown``: every running task's abort watch trips with
   "agent shutdown"; each task is terminated (grace, then kill), reported ``stopped``.
3. Side loops are cancelled, each slot's worker is unregistered, the client is closed.
The signal handlers only set these flags (see ``_on_signal``): everything else happens here, in
the loop, where it can be awaited and logged.

Start-up after a crash (SIGKILL, OOM killer): before claiming anything the daemon kills the
processes that tasks of dead agents left on the machine (``tree.kill_orphans``), and requeues
or fails, as the retry policy says (agent/retry.py), the tasks the server still shows
``in_progress`` on this agent's workers: whatever ran them is gone, and without this they
would stay ``in_progress`` for good when the agent comes back (same worker id) before the
server's watchdog noticed it was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from agent.api.client import ApiClient
from agent.api.errors import ApiError, InvalidStateError, NotFoundError
from agent.config.settings import Settings
from agent.pipeline.report import Outcome
from agent.pipeline.requeue import recover_lost_tasks
from agent.retry import queue_caps
from agent.supervise.metrics import MachineSampler
from agent.supervise.tree import kill_orphans
from agent.worker import sdnotify
from agent.worker.memory import release_free_memory
from agent.worker.policy import (
    Slot,
    is_own_worker,
    make_slots,
    next_poll_delay,
    no_such_endpoint,
    queue_order,
)

log = structlog.get_logger()


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # the agent could not start or lost its server for good
    USAGE = 2  # bad settings or arguments


# Runs one task to its end and reports it; built by the CLI from pipeline.run.
TaskRunner = Callable[["Slot", str, asyncio.Event], Coroutine[None, None, Outcome]]


class Daemon:
    def __init__(
        self,
        settings: Settings,
        api: ApiClient,
        runner: TaskRunner,
        *,
        gpu_count: int = 0,
        sampler: MachineSampler | None = None,
    ) -> None:
        self.settings = settings
        self.api = api
        self.runner = runner
        self.slots = make_slots(settings, gpu_count)
        self.sampler = sampler or MachineSampler()
        self.stopping = asyncio.Event()  # first signal: stop claiming, drain
        self.shutdown = asyncio.Event()  # second signal or drain timeout: abort running tasks
        self.queue_ids: list[str] = []
        self._signals = 0
        self._turn = 0
        self._long_polls = settings.poll_wait > 0  # until the server shows it has none
        self._pace_next_idle = False
        self._queue_caps: dict[str, int] = {}  # retry cap per served queue id
        self._idle_since_work = True  # start-up counts as work: trim once idle

    # --- the story --------------------------------------------------------------------
    async def run(self) -> ExitCode:
        await self._kill_orphans()
        self.queue_ids = await self._resolve_queues()
        self._queue_caps = queue_caps(
            self.settings.queues,
            self.queue_ids,
            self.settings.queue_max_retries,
            self.settings.max_retries,
        )
        await self._register()
        await self._recover_lost_tasks()
        side = [
            asyncio.create_task(self._side_loop("heartbeat", self._heartbeat_loop)),
            asyncio.create_task(self._side_loop("watchdog", self._watchdog_loop)),
        ]
        log.info("agent ready", worker=self.settings.effective_worker_id, queues=self.queue_ids)
        sdnotify.notify_ready()
        sdnotify.notify_status(f"serving {len(self.queue_ids)} queue(s)")
        try:
            await self._serve()
            sdnotify.notify_stopping()
            sdnotify.notify_status("draining: no new tasks")
            await self._drain()
        finally:
            for loop in side:
                loop.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            await self._unregister()
        return ExitCode.OK

    async def _serve(self) -> None:
        delay = 0.0
        while not self.stopping.is_set():
            slot = await self._free_slot()
            if slot is None:
                return
            claimed = await self._claim(slot)
            delay = next_poll_delay(
                delay,
                claimed,
                self.settings.poll_min_interval,
                self.settings.poll_max_interval,
            )
            if not claimed:
                await self._idle(delay)

    async def _idle(self, delay: float) -> None:
        """Nothing claimed: wait on the server until a queue has an entry (long polls, again
        while they run out empty); on a server without long polls (ClearML's), or when the
        last one showed entries that the claim then missed, wait ``delay`` (the adaptive
        back-off) instead."""
        if self._idle_since_work:
            self._idle_since_work = False
            release_free_memory()  # what start-up or the last task freed goes back to the system
        if self._pace_next_idle:
            self._pace_next_idle = False
            await self._wait(self.stopping, delay)
            return
        found: list[str] | None = None
        while not self.stopping.is_set():
            started = time.monotonic()
            found = await self._long_poll()
            if found != [] or time.monotonic() - started < self.settings.poll_wait / 2:
                break  # entries, no long poll, or an empty answer too soon (a server stopping)
            # nothing queued during the whole wait: no claim round needed, wait again
        if not found:
            await self._wait(self.stopping, delay)
        self._pace_next_idle = bool(found)

    async def _long_poll(self) -> list[str] | None:
        """One ``queues.wait_for_entries``, cut short by a stop: the queues with entries ([]
        after the wait or on a stop); None when there is no long poll to wait on."""
        if not self._long_polls:
            return None
        request = asyncio.ensure_future(
            self.api.wait_for_entries(self.queue_ids, self.settings.poll_wait)
        )
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({request, stop}, return_when=asyncio.FIRST_COMPLETED)
        for future in (request, stop):
            future.cancel()
        await asyncio.gather(request, stop, return_exceptions=True)
        if request.cancelled():
            return []  # stopping
        error = request.exception()
        if error is None:
            return request.result()
        if not isinstance(error, ApiError):
            raise error
        if no_such_endpoint(error):
            self._long_polls = False
            log.info(
                "the server has no long poll; polling", interval=self.settings.poll_max_interval
            )
        else:
            log.warning("long poll failed", error=str(error))
        return None

    # --- claiming ---------------------------------------------------------------------
    async def _claim(self, slot: Slot) -> bool:
        """Pop the next task from the queues in order and start it in ``slot``."""
        order = queue_order(self.queue_ids, self.settings.order_fairness, self._turn)
        self._turn += 1
        for queue_id in order:
            try:
                task_id = await self.api.get_next_task(queue_id, slot.worker_id)
            except ApiError as exc:
                log.warning("claim failed", queue=queue_id, error=str(exc))
                continue
            if task_id is None:
                continue
            if await self._mark_started(slot, task_id):
                self._start(slot, task_id, queue_id)
                return True
        return False

    async def _mark_started(self, slot: Slot, task_id: str) -> bool:
        try:
            await self.api.started(task_id)
        except InvalidStateError as exc:
            # Aborted or reset between the pop and the claim: not ours to run.
            log.info("claimed task not startable, skipped", task_id=task_id, error=str(exc))
            return False
        await self._report(slot, task_id)
        return True

    def _start(self, slot: Slot, task_id: str, queue_id: str) -> None:
        slot.task_id, slot.queue_id = task_id, queue_id
        slot.max_retries = self._queue_caps.get(queue_id)
        log.info("task claimed", task_id=task_id, queue=queue_id, slot=slot.index)
        slot.job = asyncio.create_task(
            self.runner(slot, task_id, self.shutdown), name=f"task:{task_id}"
        )
        slot.job.add_done_callback(functools.partial(self._finished, slot))

    def _finished(self, slot: Slot, job: asyncio.Task[Outcome]) -> None:
        self._idle_since_work = True
        if not job.cancelled() and job.exception() is not None:
            log.error("task runner crashed", task_id=slot.task_id, error=repr(job.exception()))
        slot.task_id = slot.queue_id = None

    async def _free_slot(self) -> Slot | None:
        """The first idle slot; waits while all are busy. None once stopping."""
        while not self.stopping.is_set():
            for slot in self.slots:
                if not slot.busy:
                    return slot
            waits: list[asyncio.Future[Any]] = [s.job for s in self.slots if s.job is not None]
            stop = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
        return None

    # --- shutdown ---------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        # Only flags: the loop does the work where it can be awaited (huey's rule).
        self._signals += 1
        self.stopping.set()
        if self._signals >= 2:
            self.shutdown.set()

    async def _drain(self) -> None:
        jobs = [s.job for s in self.slots if s.job is not None and not s.job.done()]
        if not jobs:
            return
        log.info("draining", tasks=[s.task_id for s in self.slots if s.busy])
        done_waiting: asyncio.Future[Any] = asyncio.gather(*jobs, return_exceptions=True)
        shutdown: asyncio.Future[Any] = asyncio.ensure_future(self.shutdown.wait())
        await asyncio.wait(
            [done_waiting, shutdown],
            timeout=self.settings.drain_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        self.shutdown.set()  # drain over (or cut short): abort what is left
        shutdown.cancel()
        await done_waiting

    # --- after a crash ----------------------------------------------------------------
    async def _kill_orphans(self) -> None:
        orphans = await asyncio.to_thread(kill_orphans, self.settings.abort_grace)
        if orphans:
            log.warning(
                "orphaned task processes killed",
                count=len(orphans),
                tasks=sorted({o.task_id for o in orphans if o.task_id}),
            )

    async def _recover_lost_tasks(self) -> None:
        """Requeue or fail (the retry policy) what an earlier run of this agent left running."""
        base = self.settings.effective_worker_id
        await recover_lost_tasks(
            self.api,
            functools.partial(is_own_worker, base=base),
            self._queue_caps,
            self.settings.max_retries,
            base,
        )

    # --- the server's view of us ------------------------------------------------------
    async def _resolve_queues(self) -> list[str]:
        if not self.settings.queues:
            return [await self.api.default_queue_id()]
        return [await self._queue_id(name) for name in self.settings.queues]

    async def _queue_id(self, name: str) -> str:
        try:
            return await self.api.queue_id(name)
        except NotFoundError:
            if not self.settings.create_queue:
                raise
        log.info("queue created", queue=name)
        return await self.api.create_queue(name)

    async def _register(self) -> None:
        for slot in self.slots:
            await self.api.register_worker(
                slot.worker_id, self.queue_ids, timeout=self.settings.worker_timeout
            )

    async def _unregister(self) -> None:
        for slot in self.slots:
            try:
                await self.api.unregister_worker(slot.worker_id)
            except ApiError as exc:
                log.warning("unregister failed", worker=slot.worker_id, error=str(exc))

    async def _report(self, slot: Slot, task_id: str | None) -> None:
        try:
            await self.api.status_report(
                slot.worker_id,
                queues=self.queue_ids,
                task=task_id,
                queue=slot.queue_id,
                machine_stats=self.sampler.sample(),
            )
        except ApiError as exc:
            log.warning("status report failed", worker=slot.worker_id, error=str(exc))

    async def _side_loop(self, name: str, loop: Callable[[], Coroutine[None, None, None]]) -> None:
        """Run a side loop; if it dies, say so and start it again after a pause."""
        while True:
            try:
                await loop()
                return  # a loop that ends by itself (e.g. no watchdog configured) is done
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any crash of a side loop is reported
                log.error("side loop died, restarting", loop=name, error=repr(exc))
                await asyncio.sleep(self.settings.heartbeat_interval)

    async def _heartbeat_loop(self) -> None:
        while True:
            for slot in list(self.slots):  # services mode adds and retires slots
                await self._report(slot, slot.task_id)
                if slot.task_id is not None:
                    with contextlib.suppress(ApiError):
                        await self.api.ping(slot.task_id)
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _watchdog_loop(self) -> None:
        """Feed systemd's watchdog (WatchdogSec) while the loop is alive, drain included."""
        interval = sdnotify.watchdog_interval()
        if interval is None:
            return
        while True:
            sdnotify.notify_watchdog()
            await asyncio.sleep(interval)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
