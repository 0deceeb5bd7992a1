"""LogCursor: a followed log prints each console event once (pure)."""

from __future__ import annotations

from typing import Any

from agent.cli.support import LogCursor


def ev(ms: int, msg: str, level: str = "info") -> dict[str, Any]:
    return {"timestamp": ms, "msg": msg, "level": level}


def test_each_event_is_printed_once_across_overlapping_fetches() -> None:
    cursor = LogCursor()
    assert [e["msg"] for e in cursor.new([ev(1, "a"), ev(5, "b"), ev(5, "c")])] == ["a", "b", "c"]
    assert cursor.since_ms == 5
    # the next fetch starts at 5 again: b and c come back, d shares their millisecond
    again = [ev(5, "b"), ev(5, "c"), ev(5, "d"), ev(9, "e")]
    assert [e["msg"] for e in cursor.new(again)] == ["d", "e"]
    assert [e["msg"] for e in cursor.new([ev(9, "e")])] == []
    assert cursor.new([]) == []


def test_identical_lines_in_one_millisecond_are_all_printed() -> None:
    cursor = LogCursor()
    assert len(cursor.new([ev(3, "tick"), ev(3, "tick")])) == 2
    assert len(cursor.new([ev(3, "tick"), ev(3, "tick"), ev(3, "tick")])) == 1
    assert len(cursor.new([ev(3, "tick", "error")] * 1)) == 1  # another level is another line


def test_events_older_than_the_cursor_are_not_repeated() -> None:
    cursor = LogCursor()
    cursor.new([ev(10, "x")])
    assert cursor.new([ev(4, "late"), ev(10, "x"), ev(11, "y")]) == [ev(11, "y")]
