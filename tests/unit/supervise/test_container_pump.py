"""The container pump's batching (pure threads, no engine): frames → lines in order, handed to
the sink in runs, promptly when no frame follows, and a sink error after every line."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from agent.supervise.container import _pump

WAIT = 20.0


class Sink:
    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.fail_on = fail_on
        self.got_line = threading.Event()

    def write_lines(
        self, lines: Sequence[str], level: str = "info", ts: float | None = None
    ) -> None:
        self.calls.append((level, list(lines)))
        self.got_line.set()
        if self.fail_on and any(self.fail_on in line for line in lines):
            raise OSError(28, "No space left on device")

    def lines(self) -> list[tuple[str, str]]:
        return [(level, line) for level, lines in self.calls for line in lines]


def frames(count: int) -> Iterator[tuple[bytes | None, bytes | None]]:
    for i in range(count):
        if i % 3 == 2:
            yield None, f"err {i}\n".encode()
        else:
            yield f"out {i}\n".encode(), None


def test_line_per_frame_output_is_handed_over_in_runs_in_order() -> None:
    sink = Sink()
    _pump(frames(30_000), sink)
    expected = [("error" if i % 3 == 2 else "info", f"{'err' if i % 3 == 2 else 'out'} {i}")
                for i in range(30_000)]  # fmt: skip
    assert sink.lines() == expected
    # runs alternate with the level (two stdout lines, one stderr): the batching keeps them
    # apart, in order; but never a call per frame for a run of one level
    sink = Sink()
    _pump(((f"out {i}\n".encode(), None) for i in range(30_000)), sink)
    assert len(sink.calls) <= 30_000 // 100


def test_a_line_is_handed_over_without_waiting_for_the_next_frame() -> None:
    sink = Sink()

    def slow() -> Iterator[tuple[bytes | None, bytes | None]]:
        yield b"first\n", None
        assert sink.got_line.wait(WAIT), "the line waited for the next frame"
        yield b"second\n", None

    _pump(slow(), sink)
    assert sink.lines() == [("info", "first"), ("info", "second")]


def test_a_sink_error_is_raised_after_the_lines_were_handed_over() -> None:
    sink = Sink(fail_on="boom")
    with pytest.raises(OSError, match="No space left"):
        _pump(iter([(b"ok\nboom\n", None), (None, b"after\n")] + [(b"x\n", None)] * 5), sink)
    assert ("info", "boom") in sink.lines() and ("info", "ok") in sink.lines()
