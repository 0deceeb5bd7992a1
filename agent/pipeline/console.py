"""What a stage writes into its task's console log ("cloning… (cache hit)").

Stages receive a :class:`Console`; the real one appends to the task's log spool (shipped to the
server), :class:`ListConsole` keeps lines in memory for unit tests. Both are thread-safe: the
blocking stages (git, installers) run in worker threads.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Console(Protocol):
    def info(self, message: str) -> None:
        """One agent line, shown in the task's console as ``conveyor: <message>``."""

    def error(self, message: str) -> None:
        """One agent line at level error."""


class ListConsole:
    """In-memory console for tests: ``lines`` holds ``(level, message)`` pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def info(self, message: str) -> None:
        with self._lock:
            self.lines.append(("info", message))

    def error(self, message: str) -> None:
        with self._lock:
            self.lines.append(("error", message))

    def text(self) -> str:
        with self._lock:
            return "\n".join(message for _, message in self.lines)
