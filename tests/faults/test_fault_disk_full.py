"""The log spool's disk is full: the task fails with a reason, no line it printed is lost, the
agent says what happened and serves the next task."""

from __future__ import annotations

import contextlib
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from tests.faults.reliability import (
    ensure_queue,
    iter_records,
    launch,
    log_events,
    stop,
    task_records,
)
from tests.helpers import api_call
from tests.integration.daemon.support import create_task, wait_final

pytestmark = pytest.mark.slow

TMPFS_SIZE = "64k"
FLOOD = textwrap.dedent(
    """
    for i in range(3000):
        print(f"line {i:04d} " + "x" * 100, flush=True)
    """
)


@contextlib.contextmanager
def tiny_filesystem(path: Path) -> Iterator[None]:
    """A 64 KiB tmpfs mounted on ``path`` (needs root: skipped otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _assert_complete_prefix(lines: list[str], at_least: int) -> None:
    numbered = [ln for ln in lines if ln.startswith("line ")]
    expected = [f"line {i:04d} " + "x" * 100 for i in range(len(numbered))]
    assert numbered == expected, "lines lost, duplicated or out of order"
    assert len(numbered) >= at_least


def test_spool_disk_fills_mid_task(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_cache: Path
) -> None:
    data_dir = tmp_path / "agent"
    with tiny_filesystem(data_dir / "spool"):
        agent = launch(embedded_server, data_dir, agent_cache, "full")
        try:
            flood = create_task(embedded_server, "flood", {"diff": FLOOD}, "full")
            doc = wait_final(embedded_server, flood, timeout=60)
            assert doc["status"] == "failed"
            assert "could not spool the task's log" in doc["status_reason"]
            assert "No space left on device" in doc["status_reason"]
            # Everything the agent read before it stopped the task went out, the line the disk
            # refused included (from memory): a gap-free prefix, as long as 64 KiB could hold.
            _assert_complete_prefix(task_records(embedded_server, flood), at_least=300)
            errors = [e for e in log_events(agent) if e.get("event") == "spool failure"]
            assert errors and "No space left on device" in errors[0]["error"]
            after = create_task(embedded_server, "after", {"diff": "print('still here')\n"}, "full")
            assert wait_final(embedded_server, after, timeout=60)["status"] == "completed"
            assert "still here" in task_records(embedded_server, after)
        finally:
            stop(agent)


def test_spool_unwritable_from_the_first_line(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_cache: Path
) -> None:
    data_dir = tmp_path / "agent"
    agent = launch(embedded_server, data_dir, agent_cache, "devfull")
    try:
        task_id = api_call(
            embedded_server,
            "tasks.create",
            {"name": "devfull", "type": "training", "script": {"diff": "print('hello')\n"}},
        )["id"]
        spool_dir = data_dir / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        (spool_dir / f"{task_id}.jsonl").symlink_to("/dev/full")
        queue = ensure_queue(embedded_server, "devfull")
        api_call(embedded_server, "tasks.enqueue", {"task": task_id, "queue": queue})
        doc = wait_final(embedded_server, task_id, timeout=60)
        assert doc["status"] == "failed"
        assert "No space left on device" in doc["status_reason"]
        console = [line for _, line in iter_records(embedded_server, task_id)]
        assert "conveyor: attempt 1 of 3" in console  # the first line, refused by the disk
        after = create_task(embedded_server, "after", {"diff": "print('next')\n"}, "devfull")
        assert wait_final(embedded_server, after, timeout=60)["status"] == "completed"
    finally:
        stop(agent)
