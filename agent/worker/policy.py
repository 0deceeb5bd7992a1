"""The serving loop's decisions, pure: poll delays, queue order, slots and their GPUs, which
workers are this agent's, and whether a refusal means the server lacks an endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.api.errors import HTTP_BAD_REQUEST, HTTP_NOT_FOUND, ApiError, AuthError, NotFoundError
from agent.config.settings import Settings
from agent.pipeline.host import allocate_gpus
from agent.pipeline.report import Outcome


def no_such_endpoint(error: ApiError) -> bool:
    """Pure: does this refusal say the server lacks the endpoint (rather than, say, a queue)?"""
    if isinstance(error, AuthError):
        return False
    return error.code == HTTP_NOT_FOUND or (
        error.code == HTTP_BAD_REQUEST and not isinstance(error, NotFoundError)
    )


def next_poll_delay(previous: float, found_work: bool, minimum: float, maximum: float) -> float:
    """Adaptive polling (pure): no wait while work is found, then doubling up to ``maximum``."""
    if found_work:
        return 0.0
    return min(maximum, max(minimum, previous * 2))


def queue_order(queue_ids: Sequence[str], fairness: bool, turn: int) -> list[str]:
    """Strict priority (first queue first, always), or round-robin starting at ``turn``."""
    if not fairness or not queue_ids:
        return list(queue_ids)
    start = turn % len(queue_ids)
    return [*queue_ids[start:], *queue_ids[:start]]


@dataclass
class Slot:
    """One concurrent task runner; with several slots each is its own worker on the server."""

    index: int
    worker_id: str
    gpus: tuple[int, ...]
    task_id: str | None = None
    queue_id: str | None = None
    max_retries: int | None = None  # the retry cap of the queue the task came from
    job: asyncio.Task[Outcome] | None = field(default=None, repr=False)

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.done()


def is_own_worker(worker: str, base: str) -> bool:
    """Pure: ``worker`` is this agent's (``base``, or one of its slots ``base:<n>``, whatever
    its slot count was when it ran)."""
    if worker == base:
        return True
    prefix, _, slot = worker.rpartition(":")
    return prefix == base and slot.isdigit()


def make_slots(settings: Settings, gpu_count: int) -> list[Slot]:
    base = settings.effective_worker_id
    gpu_sets = allocate_gpus(settings.gpus, gpu_count, settings.slots)
    if settings.slots == 1:
        return [Slot(0, base, gpu_sets[0])]
    return [Slot(i, f"{base}:{i}", gpu_sets[i]) for i in range(settings.slots)]
