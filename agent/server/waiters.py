"""Long polls on queues: an idle agent's request waits here until one of its queues gains an
entry (or its time is up), instead of asking again and again.

``notify(queue_id)`` comes from whichever thread pushed the entry, *after* the transaction
committed (the store announces every committed push: ``Store.on_push``); a waiter is
registered *before* it looks at its queues, so an entry pushed between the look and the wait
still wakes it. ``close()`` (server shutdown) wakes everyone at once: a long poll never holds
up a stop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Set
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Waiter:
    queues: Set[str]
    loop: asyncio.AbstractEventLoop
    woken: asyncio.Event = field(default_factory=asyncio.Event)


class QueueWaiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._closed = False

    @contextmanager
    def watch(self, queues: Set[str]) -> Iterator[asyncio.Event]:
        """Register for ``queues`` (call on the event loop); the event is set on a push to one
        of them or on close."""
        waiter = _Waiter(frozenset(queues), asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                waiter.woken.set()
            self._waiters.append(waiter)
        try:
            yield waiter.woken
        finally:
            with self._lock:
                self._waiters.remove(waiter)

    def notify(self, queue_id: str) -> None:
        """An entry was committed to ``queue_id`` (any thread)."""
        with self._lock:
            woken = [w for w in self._waiters if queue_id in w.queues]
        for waiter in woken:
            _wake(waiter)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            woken = list(self._waiters)
        for waiter in woken:
            _wake(waiter)

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiters)


def _wake(waiter: _Waiter) -> None:
    if not waiter.loop.is_closed():
        waiter.loop.call_soon_threadsafe(waiter.woken.set)
