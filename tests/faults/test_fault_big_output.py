"""Hostile output: a 10 MB line, invalid UTF-8 and binary, then 100 MB as fast as the task can
print. Everything reaches the server (counted there, record by record) and the agent's memory
stays bounded while it happens."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from agent.supervise.lines import LineSplitter
from tests.faults.reliability import AGENT_PREFIX, RssSampler, iter_records, launch, stop
from tests.integration.daemon.support import create_task, wait_final

pytestmark = pytest.mark.slow

LONG_LINE_DIGITS = 1_250_000  # 8 characters each: a 10 MB line
FLOOD_LINES = 1_000_000  # 100 bytes each (newline included): 100 MB
MAX_AGENT_RSS = 300 * 1024 * 1024
# Bytes no decoder likes: stray continuation bytes, a truncated 3-byte sequence, an overlong
# '/', an encoded surrogate, code points past U+10FFFF, NULs, escape sequences, CRs.
NASTY = (
    b"\x80\xbf\xff\xfe valid \xe2\x82 \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \x00\x00"
    b" \x1b[31mred\x1b[0m tab\there\r\n\xe2\x82\xac euro split \xf0\x9f\x98"
)

TASK = textwrap.dedent(
    """
    import sys
    out = sys.stdout.buffer
    out.write(b"begin long\\n")
    out.write("".join(f"{i:08d}" for i in range(%(digits)d)).encode() + b"\\n")
    out.write(b"end long\\n")
    with open(sys.argv[1], "rb") as f:
        out.write(f.read())
    out.write(b"\\nafter binary\\n")
    pad = b"x" * 90 + b"\\n"
    for start in range(0, %(flood)d, 1000):
        out.write(b"".join(b"%%08d " %% i + pad for i in range(start, start + 1000)))
    out.write(b"done\\n")
    out.flush()
    """
)


def _binary(path: Path) -> bytes:
    data = NASTY + random.Random(7).randbytes(256 * 1024) + NASTY
    path.write_bytes(data)
    return data


def _expected_binary_records(data: bytes) -> list[str]:
    """What the agent's line splitter makes of the bytes (its rules are unit-tested on their
    own): here only delivery is under test, so the oracle is the splitter itself."""
    splitter = LineSplitter()
    return splitter.feed(b"\n" + data + b"\nafter binary\n", 0.0)[1:] + splitter.finish(0.0)


def test_long_line_binary_and_100_mb_all_delivered_in_bounded_memory(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_cache: Path
) -> None:
    blob = _binary(tmp_path / "blob.bin")
    script = TASK % {"digits": LONG_LINE_DIGITS, "flood": FLOOD_LINES}
    agent = launch(embedded_server, tmp_path / "agent", agent_cache, "big")
    try:
        with RssSampler(agent.process.pid) as rss:
            task_id = create_task(
                embedded_server,
                "big",
                {"diff": script, "entry_point": f"big.py {tmp_path / 'blob.bin'}"},
                "big",
            )
            doc = wait_final(embedded_server, task_id, timeout=600)
        assert doc["status"] == "completed", doc.get("status_reason")
        assert rss.samples > 10
        assert rss.peak < MAX_AGENT_RSS, f"agent RSS peaked at {rss.peak / 2**20:.0f} MB"
    finally:
        stop(agent)

    records = (line for level, line in iter_records(embedded_server, task_id) if level == "info")
    task_lines = (line for line in records if not line.startswith(AGENT_PREFIX))
    assert next(task_lines) == "begin long"
    long_line = "".join(f"{i:08d}" for i in range(LONG_LINE_DIGITS))
    pieces = []
    for line in task_lines:
        if line == "end long":
            break
        pieces.append(line)
    assert "".join(pieces) == long_line  # cut in pieces (64 KiB each), nothing lost
    assert max(map(len, pieces)) <= 64 * 1024
    for expected in _expected_binary_records(blob):
        assert next(task_lines) == expected
    pad = "x" * 90
    count = 0
    for i, line in enumerate(task_lines):
        if line == "done":
            break
        assert line == f"{i:08d} {pad}", f"flood line {i} lost or out of order"
        count += 1
    assert count == FLOOD_LINES
    assert next(task_lines, None) is None
