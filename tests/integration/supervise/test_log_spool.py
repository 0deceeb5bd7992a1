"""Spool files on a real disk: append, read back, acknowledge, resume, lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.supervise.spool import Spool, SpoolBusy, SpoolError, leftover_spools


def test_append_read_ack_and_resume(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "task1")
    spool.open("box:0")
    for i in range(10):
        spool.append(100.0 + i, "info" if i % 3 else "error", [f"line {i} ✓"])
    records, offset = spool.read(0, 10**6, 4)
    assert [r.lines[0] for r in records] == [f"line {i} ✓" for i in range(4)]
    assert [r.seq for r in records] == [0, 1, 2, 3]
    spool.ack(offset)
    spool.release()

    assert leftover_spools(tmp_path) == [("task1", "box:0")]
    again = Spool(tmp_path, "task1")
    again.open("other")
    assert again.acked == offset
    rest, end = again.read(again.acked, 10**6, 100)
    assert [r.lines[0] for r in rest] == [f"line {i} ✓" for i in range(4, 10)]
    assert end == again.size  # read up to the end of the file
    assert again.append(200.0, "info", ["after restart"]).seq == 10
    again.remove()
    assert list(tmp_path.iterdir()) == []


def test_read_respects_byte_limit_but_returns_a_long_record_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "t")
    spool.open("w")
    spool.append(1.0, "info", ["x" * 5000])
    spool.append(1.0, "info", ["short"])
    records, offset = spool.read(0, 100, 100)
    assert [len(r.lines[0]) for r in records] == [5000]
    records, _ = spool.read(offset, 100, 100)
    assert [r.lines[0] for r in records] == ["short"]
    spool.remove()


def test_unterminated_tail_and_corrupt_records_are_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "t")
    spool.open("w")
    spool.append(1.0, "info", ["kept"])
    spool.release()
    with spool.path.open("ab") as f:
        f.write(b"not json\n")
        f.write(b'[5, 1.0, "info", "half')  # the agent crashed mid-write
    again = Spool(tmp_path, "t")
    again.open("w")
    records, _ = again.read(0, 10**6, 100)
    assert [r.lines[0] for r in records] == ["kept"]
    assert again.path.read_bytes().endswith(b"\n")
    again.remove()


def test_a_spool_in_use_is_busy(tmp_path: Path) -> None:
    first = Spool(tmp_path, "t")
    first.open("w")
    with pytest.raises(SpoolBusy):
        Spool(tmp_path, "t").open("w")
    first.release()
    second = Spool(tmp_path, "t")
    second.open("w")
    second.remove()


def test_full_disk_is_a_spool_error(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").symlink_to("/dev/full")
    spool = Spool(tmp_path, "t")
    spool.open("w")
    with pytest.raises(SpoolError) as info:
        spool.append(1.0, "info", ["x"])
    assert isinstance(info.value, OSError)
    assert "No space left" in str(info.value) and "t.jsonl" in str(info.value)
    spool.remove()
    assert not os.path.lexists(tmp_path / "t.jsonl")


def test_a_record_holds_the_lines_read_together_and_reads_count_lines(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "t")
    spool.open("w")
    for chunk in range(4):
        spool.append(1.0 + chunk, "info", [f"{chunk}.{i}" for i in range(300)])
    records, offset = spool.read(0, 10**6, 500)  # 500 lines: the second record is read whole
    assert [len(r.lines) for r in records] == [300, 300]
    assert records[1].lines[-1] == "1.299" and records[1].ts == 2.0
    rest, end = spool.read(offset, 10**6, 10**6)
    assert [r.seq for r in rest] == [2, 3] and end == spool.size
    spool.remove()


def test_spools_of_the_one_line_format_are_still_read(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_bytes(
        b'[0,1.0,"info","old line"]\n[1,2.0,"error",["new","lines"]]\n[2,3.0,"info",[1]]\n'
    )
    spool = Spool(tmp_path, "t")
    spool.open("w")
    records, _ = spool.read(0, 10**6, 100)
    assert [(r.level, list(r.lines)) for r in records] == [
        ("info", ["old line"]),
        ("error", ["new", "lines"]),  # the record of a non-string line was skipped as corrupt
    ]
    assert spool.append(4.0, "info", ["next"]).seq == 2  # after the last readable record
    spool.remove()
