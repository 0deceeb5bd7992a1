"""run_process with real processes: output pumping, abort of whole trees, timeouts, reaping."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from agent.errors import StageError
from agent.supervise.process import Abort, ExitInfo, describe, run_process

WAIT = 20.0  # every wait in these tests gives up after this long


class RecordingSink:
    """Collects lines; ``expect(text)`` waits until a line containing ``text`` arrived."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, float]] = []
        self._waiters: list[tuple[str, asyncio.Event]] = []

    def write_lines(
        self, lines: Sequence[str], level: str = "info", ts: float | None = None
    ) -> None:
        for line in lines:
            self.lines.append((line, level, ts if ts is not None else time.time()))
            for text, event in self._waiters:
                if text in line:
                    event.set()

    async def expect(self, text: str) -> None:
        if any(text in line for line, _, _ in self.lines):
            return
        event = asyncio.Event()
        self._waiters.append((text, event))
        await asyncio.wait_for(event.wait(), WAIT)

    def text(self, level: str | None = None) -> list[str]:
        return [line for line, lvl, _ in self.lines if level is None or lvl == level]


async def run_script(
    code: str,
    tmp_path: Path,
    sink: RecordingSink | None = None,
    *,
    abort: Abort | None = None,
    grace: float = 5.0,
    timeout: float | None = None,
) -> ExitInfo:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return await run_process(
        [sys.executable, "-u", str(script)],
        cwd=tmp_path,
        env=dict(os.environ),
        sink=sink or RecordingSink(),
        abort=abort,
        grace=grace,
        timeout=timeout,
    )


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


async def all_gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_stdout_and_stderr_lines_in_order_with_levels(tmp_path: Path) -> None:
    sink = RecordingSink()
    exit_info = await run_script(
        """
        import sys
        for i in range(300):
            print(f"out {i}")
            print(f"err {i}", file=sys.stderr)
        print("unicode ✓ done")
        """,
        tmp_path,
        sink,
    )
    assert exit_info.returncode == 0 and exit_info.signal is None and exit_info.succeeded
    assert sink.text("info") == [f"out {i}" for i in range(300)] + ["unicode ✓ done"]
    assert sink.text("error") == [f"err {i}" for i in range(300)]
    stamps = [ts for _, _, ts in sink.lines]
    assert all(abs(ts - time.time()) < 60 for ts in stamps)


async def test_progress_lines_collapse(tmp_path: Path) -> None:
    sink = RecordingSink()
    await run_script(
        r"""
        import sys
        for p in range(0, 101, 10):
            sys.stdout.write(f"\rtraining {p}%")
            sys.stdout.flush()
        sys.stdout.write("\nfinished\n")
        """,
        tmp_path,
        sink,
    )
    assert sink.text() == ["training 100%", "finished"]


async def test_huge_line_binary_and_invalid_utf8(tmp_path: Path) -> None:
    sink = RecordingSink()
    exit_info = await run_script(
        """
        import sys
        sys.stdout.write("x" * 10_000_000)
        sys.stdout.write("\\n")
        sys.stdout.flush()
        sys.stdout.buffer.write(b"bad \\xff\\xfe bytes\\n" + bytes(range(256)) * 64 + b"\\n")
        sys.stdout.buffer.flush()
        print("end")
        """,
        tmp_path,
        sink,
    )
    assert exit_info.returncode == 0
    lines = sink.text()
    xs = [line for line in lines if line.startswith("x")]
    assert sum(len(line) for line in xs) == 10_000_000
    assert max(len(line) for line in lines) <= 64 * 1024
    assert "bad \ufffd\ufffd bytes" in lines
    assert lines[-1] == "end"


async def test_exit_code_and_own_signal(tmp_path: Path) -> None:
    assert describe(await run_script("raise SystemExit(3)", tmp_path)) == "exit code 3"
    killed = await run_script("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", tmp_path)
    assert (killed.returncode, killed.signal) == (None, 9)
    assert describe(killed).startswith("killed by signal 9 (SIGKILL: out of memory?")


TREE = """
import os, signal, subprocess, sys, time
pids = []
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
pids.append(child.pid)
stubborn = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
pids.append(stubborn.pid)
r, w = os.pipe()
if os.fork() == 0:              # intermediate: starts an escapee and exits at once
    if os.fork() == 0:          # escapee: own session, ignores SIGTERM, orphaned
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(w, f"{os.getpid()}\\n".encode())
        time.sleep(120)
        os._exit(0)
    os._exit(0)
escapee = int(os.read(r, 64).decode())
pids.append(escapee)
print("pids", " ".join(map(str, pids)), flush=True)
time.sleep(120)
"""


async def test_abort_kills_the_whole_tree_including_setsid_escapees(tmp_path: Path) -> None:
    sink, abort = RecordingSink(), Abort()
    run = asyncio.create_task(run_script(TREE, tmp_path, sink, abort=abort, grace=1.0))
    await sink.expect("pids ")
    (line,) = [line for line in sink.text() if line.startswith("pids ")]
    pids = [int(p) for p in line.split()[1:]]
    escapee = pids[-1]
    assert os.getsid(escapee) == escapee  # left the task's session and process group
    abort.trip("aborted by user")
    exit_info = await asyncio.wait_for(run, WAIT)
    assert exit_info.aborted == "aborted by user"
    assert describe(exit_info) == "aborted: aborted by user"
    assert await all_gone(pids), [p for p in pids if not gone(p)]


async def test_sigterm_ignoring_process_is_killed_after_grace(tmp_path: Path) -> None:
    sink, abort = RecordingSink(), Abort()
    run = asyncio.create_task(
        run_script(
            """
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            time.sleep(120)
            """,
            tmp_path,
            sink,
            abort=abort,
            grace=0.5,
        )
    )
    await sink.expect("ready")
    started = time.monotonic()
    abort.trip("agent shutdown")
    exit_info = await asyncio.wait_for(run, WAIT)
    assert exit_info.signal == 9
    assert 0.4 <= time.monotonic() - started < 10
    assert exit_info.aborted == "agent shutdown"


async def test_graceful_sigterm_lets_the_process_clean_up(tmp_path: Path) -> None:
    sink, abort = RecordingSink(), Abort()
    run = asyncio.create_task(
        run_script(
            """
            import signal, sys, time
            def bye(*_):
                print("saving checkpoint", flush=True)
                sys.exit(0)
            signal.signal(signal.SIGTERM, bye)
            print("ready", flush=True)
            time.sleep(120)
            """,
            tmp_path,
            sink,
            abort=abort,
            grace=10.0,
        )
    )
    await sink.expect("ready")
    abort.trip("aborted by user")
    exit_info = await asyncio.wait_for(run, WAIT)
    assert "saving checkpoint" in sink.text()
    assert exit_info.returncode == 0 and exit_info.aborted == "aborted by user"
    assert exit_info.duration < 10


async def test_timeout(tmp_path: Path) -> None:
    exit_info = await run_script("import time; time.sleep(120)", tmp_path, timeout=0.5)
    assert exit_info.timed_out and exit_info.signal == 15
    assert describe(exit_info) == "timed out after 0.5 s"
    assert exit_info.duration < 10


async def test_leftover_background_processes_are_killed_after_exit(tmp_path: Path) -> None:
    sink = RecordingSink()
    exit_info = await run_script(
        """
        import subprocess, sys
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("bg", p.pid, flush=True)
        """,
        tmp_path,
        sink,
    )
    pid = int(sink.text()[0].split()[1])
    assert exit_info.returncode == 0 and exit_info.leftovers == 1
    assert await all_gone([pid])


async def test_child_holding_the_pipe_does_not_hang_the_run(tmp_path: Path) -> None:
    sink = RecordingSink()
    exit_info = await asyncio.wait_for(
        run_script(
            """
            import subprocess, sys
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            print("parent done", flush=True)
            """,
            tmp_path,
            sink,
        ),
        WAIT,
    )
    assert exit_info.returncode == 0 and "parent done" in sink.text()


async def test_missing_program_is_a_stage_error(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="could not start"):
        await run_process(
            [str(tmp_path / "no-such-python")],
            cwd=tmp_path,
            env={},
            sink=RecordingSink(),
        )


async def test_cancelling_the_run_kills_the_process(tmp_path: Path) -> None:
    sink = RecordingSink()
    run = asyncio.create_task(
        run_script(
            "import os, time; print('pid', os.getpid(), flush=True); time.sleep(120)",
            tmp_path,
            sink,
        )
    )
    await sink.expect("pid ")
    pid = int(sink.text()[0].split()[1])
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await all_gone([pid])


class FullDiskSink(RecordingSink):
    def write_lines(
        self, lines: Sequence[str], level: str = "info", ts: float | None = None
    ) -> None:
        if any("boom" in line for line in lines):
            raise OSError(28, "No space left on device")
        super().write_lines(lines, level, ts)


async def test_sink_failure_ends_the_process_and_is_raised(tmp_path: Path) -> None:
    sink = FullDiskSink()
    started = time.monotonic()
    with pytest.raises(OSError, match="No space left"):
        await run_script(
            "import time; print('ok', flush=True); print('boom', flush=True); time.sleep(120)",
            tmp_path,
            sink,
            grace=1.0,
        )
    assert time.monotonic() - started < WAIT


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_processes_that_end_at_once(tmp_path: Path) -> None:
    before = open_fds()
    for _ in range(20):
        exit_info = await run_process(
            ["/bin/true"], cwd=tmp_path, env=dict(os.environ), sink=RecordingSink()
        )
        assert exit_info.returncode == 0 and exit_info.leftovers == 0
    with pytest.raises(StageError):
        await run_process([str(tmp_path / "missing")], cwd=tmp_path, env={}, sink=RecordingSink())
    assert open_fds() == before  # every pipe end closed, the failed start's included


class CountingSink(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def write_lines(
        self, lines: Sequence[str], level: str = "info", ts: float | None = None
    ) -> None:
        self.calls += 1
        super().write_lines(lines, level, ts)


async def test_a_line_by_line_printer_is_read_in_chunks_of_many_lines(tmp_path: Path) -> None:
    sink = CountingSink()
    code = "for i in range(20000):\n    print('line', i)\n"
    exit_info = await run_script(code, tmp_path, sink)  # python -u: one write(2) per line
    assert exit_info.succeeded
    assert sink.text() == [f"line {i}" for i in range(20000)]
    assert sink.calls <= 2000, sink.calls  # not a read (and a spool record) per line
