"""pack_events: console records → ClearML log events (pure)."""

from __future__ import annotations

from agent.supervise.logs import MAX_EVENT_CHARS, pack_events
from agent.supervise.spool import Record


def rec(i: int, msg: str, level: str = "info", ts: float = 1000.0) -> Record:
    return Record(i, ts, level, [msg])


def test_same_level_runs_are_packed_into_one_event() -> None:
    records = [rec(0, "a"), rec(1, "b"), rec(2, "oops", "error"), rec(3, "c")]
    events, last = pack_events(records, "t1", "box:0", 0)
    assert [(e["level"], e["msg"]) for e in events] == [
        ("info", "a\nb"),
        ("error", "oops"),
        ("info", "c"),
    ]
    assert all(e["type"] == "log" and e["task"] == "t1" and e["worker"] == "box:0" for e in events)
    assert last == events[-1]["timestamp"]


def test_timestamps_strictly_increase_even_within_one_millisecond() -> None:
    records = [rec(i, str(i), "info" if i % 2 else "error", ts=5.0) for i in range(6)]
    events, last = pack_events(records, "t", "w", 0)
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(set(stamps)) and stamps[0] == 5000
    more, _ = pack_events([rec(9, "x", ts=1.0)], "t", "w", last)  # older line, later batch
    assert more[0]["timestamp"] == last + 1


def test_events_are_cut_at_64_kib() -> None:
    line = "y" * 1000
    events, _ = pack_events([rec(i, line) for i in range(200)], "t", "w", 0)
    assert len(events) > 1
    assert all(len(e["msg"]) <= MAX_EVENT_CHARS for e in events)
    assert "\n".join(e["msg"] for e in events).split("\n") == [line] * 200
    huge, _ = pack_events([rec(0, "z" * (MAX_EVENT_CHARS * 2 + 5))], "t", "w", 0)
    assert [len(e["msg"]) for e in huge] == [MAX_EVENT_CHARS, MAX_EVENT_CHARS, 5]


def test_empty_lines_are_kept() -> None:
    events, _ = pack_events([rec(0, ""), rec(1, "x"), rec(2, "")], "t", "w", 0)
    assert events[0]["msg"].split("\n") == ["", "x", ""]


def test_records_of_many_lines_are_cut_between_lines() -> None:
    lines = [f"{i:05d} " + "y" * 100 for i in range(2000)]  # about 214 KB in one record
    events, _ = pack_events([Record(0, 1.0, "info", lines)], "t", "w", 0)
    assert len(events) == 4
    assert all(len(e["msg"]) <= MAX_EVENT_CHARS for e in events)
    assert [line for e in events for line in e["msg"].split("\n")] == lines


def test_small_records_of_one_level_share_an_event() -> None:
    records = [Record(i, 1.0, "info", [f"{i}a", f"{i}b"]) for i in range(3)]
    records.append(Record(3, 1.0, "error", ["bad", ""]))
    events, _ = pack_events(records, "t", "w", 0)
    assert [(e["level"], e["msg"]) for e in events] == [
        ("info", "0a\n0b\n1a\n1b\n2a\n2b"),
        ("error", "bad\n"),
    ]
