"""Services mode (``conveyor daemon --services-mode [N]``): one agent hosts up to N light
controller tasks at once (pipeline and HPO controllers, schedulers), each its own process.

Unlike ``--slots``, nothing is set aside up front: the agent polls as one worker and adds a
worker (``<worker id>:<n>``, so lost-task recovery still knows it as its own) only while all the
ones it has are busy, up to the cap; a worker whose task ended and is not the last idle one is
unregistered. Services tasks get no GPUs. clearml-agent's namesake runs each service in a
docker container of its own and names its workers ``<worker id>:service:<task id>``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from agent.api.client import ApiClient
from agent.api.errors import ApiError
from agent.config.settings import Settings
from agent.pipeline.report import Outcome
from agent.supervise.metrics import MachineSampler
from agent.worker.daemon import Daemon, TaskRunner
from agent.worker.policy import Slot

log = structlog.get_logger()

DEFAULT_SERVICES_CAP = 32  # ``--services-mode`` without a number (clearml-agent: unlimited)


def service_worker_id(base: str, index: int) -> str:
    """Pure: the worker id of services slot ``index`` (the first is the agent itself)."""
    return base if index == 0 else f"{base}:{index}"


def next_index(used: set[int], cap: int) -> int | None:
    """Pure: the lowest slot index not in use below ``cap``, None when all are taken."""
    return next((i for i in range(cap) if i not in used), None)


class ServicesDaemon(Daemon):
    """A Daemon whose slots grow with the work (up to ``settings.services_mode``) and shrink."""

    def __init__(
        self,
        settings: Settings,
        api: ApiClient,
        runner: TaskRunner,
        *,
        gpu_count: int = 0,
        sampler: MachineSampler | None = None,
    ) -> None:
        if settings.services_mode < 1:
            raise ValueError("ServicesDaemon needs services_mode >= 1")
        super().__init__(settings.replace(slots=1, gpus="none"), api, runner, sampler=sampler)
        self.cap = settings.services_mode
        self.base = settings.effective_worker_id
        self.slots = [Slot(0, service_worker_id(self.base, 0), ())]
        self._claiming: Slot | None = None  # the slot a claim is in flight for: never retired
        self._retiring: set[asyncio.Task[None]] = set()

    async def _claim(self, slot: Slot) -> bool:
        self._claiming = slot
        try:
            return await super()._claim(slot)
        finally:
            self._claiming = None

    def _finished(self, slot: Slot, job: asyncio.Task[Outcome]) -> None:
        """A task ended: retire spare workers now (the serve loop may be in a long poll)."""
        super()._finished(slot, job)
        retire = asyncio.get_running_loop().create_task(self._retire_spare_slots())
        self._retiring.add(retire)
        retire.add_done_callback(self._retiring.discard)

    async def _free_slot(self) -> Slot | None:
        """An idle slot, a new one while under the cap, or (at the cap) the first to finish."""
        while not self.stopping.is_set():
            await self._retire_spare_slots()
            idle = next((s for s in self.slots if not s.busy), None)
            if idle is not None:
                return idle
            index = next_index({s.index for s in self.slots}, self.cap)
            if index is not None:
                added = await self._add_slot(index)
                if added is not None:
                    return added
                await self._wait(self.stopping, self.settings.heartbeat_interval)
                continue
            waits: list[asyncio.Future[Any]] = [s.job for s in self.slots if s.job is not None]
            stop = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait([*waits, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
        return None

    async def _add_slot(self, index: int) -> Slot | None:
        slot = Slot(index, service_worker_id(self.base, index), ())
        try:
            await self.api.register_worker(slot.worker_id, self.queue_ids)
        except ApiError as exc:
            log.warning("services worker not registered; retrying", worker=slot.worker_id,
                        error=str(exc))  # fmt: skip
            return None
        self.slots.append(slot)
        log.info("services slot added", worker=slot.worker_id, running=len(self.slots) - 1)
        return slot

    async def _retire_spare_slots(self) -> None:
        """Keep one idle slot (the lowest index) and the one claiming; unregister the others."""
        idle = sorted((s for s in self.slots if not s.busy), key=lambda s: s.index)
        spare = [s for s in idle[1:] if s is not self._claiming]
        for slot in spare:  # off the list before any await: nothing can pick it meanwhile
            self.slots.remove(slot)
        for slot in spare:
            try:
                await self.api.unregister_worker(slot.worker_id)
            except ApiError as exc:
                log.warning("unregister failed", worker=slot.worker_id, error=str(exc))


def make_daemon(
    settings: Settings, api: ApiClient, runner: TaskRunner, *, gpu_count: int = 0
) -> Daemon:
    """The daemon for these settings: services mode or fixed slots."""
    if settings.services_mode:
        return ServicesDaemon(settings, api, runner)
    return Daemon(settings, api, runner, gpu_count=gpu_count)
