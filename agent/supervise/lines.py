"""Turning a process's output bytes into console lines, pure (no I/O, time passed in).

- UTF-8 decoded incrementally (a character split across reads survives); invalid bytes become
  U+FFFD instead of an exception.
- ``\\r`` progress runs collapse to their last non-blank segment ("10%\\r50%\\r100%\\n" is one
  line "100%"); a progress bar that never ends its line still shows up every
  ``progress_every`` seconds, and only its latest state is held in memory.
- A line longer than ``max_chars`` is cut into chunks of that size as it arrives, so a 10 MB
  line without a newline never sits in memory whole.
"""

from __future__ import annotations

import codecs

MAX_LINE_CHARS = 64 * 1024
PROGRESS_EVERY_S = 10.0


class LineSplitter:
    def __init__(
        self, max_chars: int = MAX_LINE_CHARS, progress_every: float = PROGRESS_EVERY_S
    ) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max = max_chars
        self._progress_every = progress_every
        self._pending = ""  # the current line after its last \r
        self._progress = ""  # the latest complete, non-blank \r segment of the current line
        self._progress_shown = False
        self._progress_at: float | None = None  # when a progress segment was last emitted

    def feed(self, data: bytes, now: float) -> list[str]:
        """The lines completed by ``data`` (without their line endings)."""
        return self._split(self._decoder.decode(data), now)

    def finish(self, now: float) -> list[str]:
        """The rest at end of stream: a last line without a newline is still a line."""
        out = self._split(self._decoder.decode(b"", final=True), now)
        if self._pending or (self._progress and not self._progress_shown):
            self._end_line(out)
        return out

    def _split(self, text: str, now: float) -> list[str]:
        if "\r" not in text and not self._progress:
            return self._split_plain(text)
        out: list[str] = []
        *complete, rest = text.split("\n")
        for part in complete:
            self._absorb(part, now, out)
            self._end_line(out)
        self._absorb(rest, now, out)
        return out

    def _split_plain(self, text: str) -> list[str]:
        """The common case, no carriage return anywhere: whole-chunk string operations only
        (a burst of short lines costs no Python work per line)."""
        *complete, rest = text.split("\n")
        if complete:
            complete[0] = self._pending + complete[0]
            self._pending = rest
        else:
            self._pending += rest
        if complete and max(map(len, complete)) > self._max:
            complete = [piece for line in complete for piece in self._cut(line)]
        self._emit_overlong_pending(complete)
        return complete

    def _cut(self, line: str) -> list[str]:
        return [line[i : i + self._max] for i in range(0, len(line), self._max)]

    def _emit_overlong_pending(self, out: list[str]) -> None:
        """A line still open but past ``max_chars``: its full chunks go out as it arrives."""
        while len(self._pending) > self._max:
            out.append(self._pending[: self._max])
            self._pending = self._pending[self._max :]

    def _absorb(self, part: str, now: float, out: list[str]) -> None:
        first, *segments = part.split("\r")
        self._pending += first
        for segment in segments:
            if self._pending.strip():
                self._progress, self._progress_shown = self._pending, False
            self._pending = segment
        if segments:
            self._maybe_show_progress(now, out)
        self._emit_overlong_pending(out)

    def _maybe_show_progress(self, now: float, out: list[str]) -> None:
        if not self._progress or self._progress_shown:
            return
        if self._progress_at is None:
            self._progress_at = now  # first progress of this line: show it after the interval
        elif now - self._progress_at >= self._progress_every:
            out.append(self._progress)
            self._progress_shown, self._progress_at = True, now

    def _end_line(self, out: list[str]) -> None:
        if self._pending.strip() or not self._progress:
            out.append(self._pending)
        elif not self._progress_shown:
            out.append(self._progress)
        self._pending, self._progress, self._progress_shown = "", "", False
        self._progress_at = None
