"""A side loop that lives exactly as long as an ``async with`` block (abort watch, monitor)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self


class SideTask:
    """Subclasses define ``_run`` and ``side_name``; entering starts ``_run`` as a named
    asyncio task, leaving cancels it and waits for it (no task outlives its block)."""

    _side: asyncio.Task[None] | None = None

    @property
    def side_name(self) -> str:
        raise NotImplementedError

    async def _run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._side = asyncio.create_task(self._run(), name=self.side_name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._side is not None:
            self._side.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._side
