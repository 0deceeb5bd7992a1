"""Running a task's process: spawn it in its own session, pump its output, end it, reap it.

The order of an ending (abort, timeout, or the process exiting by itself) is always the same:

1. abort / timeout: SIGTERM to the process group and every tracked descendant (setsid escapees
   included), ``grace`` seconds to exit, then SIGKILL of whatever is left;
2. the process is reaped (its exit status decides the task's fate);
3. leftovers (background children still running after the main process exited) are
   terminated the same way, with a shorter grace;
4. the output pumps drain what the pipes still hold, then stop.

Nothing here decides the task's status: :class:`ExitInfo` records what happened and
:func:`describe` says it in words a user can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from agent.errors import StageError
from agent.supervise.lines import LineSplitter
from agent.supervise.tree import MARKER_VAR, ProcessTree, new_marker

log = structlog.get_logger()

READ_CHUNK = 64 * 1024
LINGER_S = 0.005  # after a short read: let a line-by-line printer's output gather
PIPE_BYTES = 1024 * 1024  # asked capacity of each output pipe (Linux pipe-max-size default)
EXIT_POLL_S = 0.02
LEFTOVER_GRACE_S = 5.0  # background processes still running after the main one exited
PUMP_DRAIN_TIMEOUT_S = 5.0  # after everything is dead the pipes close; never wait forever
SHELL_SIGNAL_BASE = 128  # a shell reports "killed by signal n" as exit code 128 + n
SIGNAL_HINTS = {
    signal.SIGKILL: "out of memory?",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGABRT: "abort() called",
    signal.SIGTERM: "terminated",
    signal.SIGINT: "interrupted",
    signal.SIGPIPE: "broken pipe",
}
BYTES_PER_GB = 1024**3
# how the wait for the process ended
EXITED, ABORTED, TIMED_OUT, PUMP_FAILED = "exited", "aborted", "timed_out", "pump_failed"


class LineSink(Protocol):
    """Where output lines go (the task's log shipper); ``write`` must not block."""

    def write_lines(
        self, lines: Sequence[str], level: str = "info", ts: float | None = None
    ) -> None:
        """Keep ``lines`` (read together, at ``ts``)."""


class AbortSignal(Protocol):
    """Set ``event`` to end the process; ``reason`` says why (the pipeline's AbortWatch)."""

    @property
    def event(self) -> asyncio.Event: ...

    @property
    def reason(self) -> str | None: ...


class Abort:
    """A plain :class:`AbortSignal` (for ``conveyor execute`` and tests)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason: str | None = None

    def trip(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()


@dataclass(frozen=True)
class ExitInfo:
    returncode: int | None  # the exit code when the process exited by itself
    signal: int | None  # the signal that ended it
    aborted: str | None  # why it was stopped from outside, if it was
    timed_out: bool
    duration: float  # seconds from spawn to reap
    max_rss: int = 0  # bytes: the largest sampled memory of the whole process tree
    timeout: float | None = None  # the wall-clock limit it ran under
    leftovers: int = 0  # background processes killed after the main one exited

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and not self.aborted and not self.timed_out


def _signal_text(number: int, max_rss: int) -> str:
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"signal {number}"
    hint = SIGNAL_HINTS.get(sig, "")
    if sig == signal.SIGKILL and max_rss:
        hint += f" peak memory {max_rss / BYTES_PER_GB:.1f} GB"
    return f"signal {number} ({sig.name}{': ' + hint if hint else ''})"


def describe(info: ExitInfo) -> str:
    """Pure: how the process ended, in words a user can act on."""
    if info.aborted:
        return f"aborted: {info.aborted}"
    if info.timed_out:
        limit = info.timeout if info.timeout is not None else info.duration
        return f"timed out after {limit:g} s"
    if info.signal is not None:
        return f"killed by {_signal_text(info.signal, info.max_rss)}"
    code = info.returncode
    if code is not None and SHELL_SIGNAL_BASE < code <= SHELL_SIGNAL_BASE + 64:
        return f"exit code {code} (128 + {_signal_text(code - SHELL_SIGNAL_BASE, info.max_rss)})"
    return f"exit code {code}"


async def _pump(fd: int, level: str, sink: LineSink) -> None:
    """Copy one pipe to the sink, a chunk of lines at a time, stamped when read.

    After a short read the pump lingers ``LINGER_S`` so a task printing line by line is read in
    chunks of many lines, not one read (and one loop turn) per line; the pipe's capacity holds
    what arrives meanwhile. Closes ``fd`` when done.
    """
    splitter = LineSplitter()
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                chunk = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                await _readable(loop, fd)
                continue
            if not chunk:
                break
            now = time.time()
            if lines := splitter.feed(chunk, now):
                sink.write_lines(lines, level, now)
            if len(chunk) < READ_CHUNK:
                await asyncio.sleep(LINGER_S)
        now = time.time()
        if lines := splitter.finish(now):
            sink.write_lines(lines, level, now)
    finally:
        os.close(fd)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _output_pipe() -> tuple[int, int]:
    """A pipe for one output stream: (read end, non-blocking, ours; write end, the task's)."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # above the system's pipe-max-size: the default will do
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    os.set_blocking(read_end, False)
    return read_end, write_end


async def _spawn(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], marker: str
) -> tuple[asyncio.subprocess.Process, int, int]:
    """The started process, and the read ends of its stdout and stderr pipes."""
    out_read, out_write = _output_pipe()
    err_read, err_write = _output_pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env={**env, MARKER_VAR: marker},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            start_new_session=True,  # own session and process group: killpg reaches it all
        )
    except BaseException as exc:
        os.close(out_read)
        os.close(err_read)
        if isinstance(exc, OSError):
            raise StageError(
                f"could not start {argv[0]!r} in {cwd}: {exc.strerror or exc}", stage="supervise"
            ) from exc
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    return proc, out_read, err_read


async def _first_ending(
    proc: asyncio.subprocess.Process,
    abort: AbortSignal | None,
    deadline: float | None,
    pumps: Sequence[asyncio.Task[None]],
) -> str:
    """Wait for the process to exit, an abort, the deadline or a failing pump; which came."""
    exited: asyncio.Future[Any] = asyncio.ensure_future(_exited(proc))
    aborted: asyncio.Future[Any] | None = None
    if abort is not None:
        aborted = asyncio.ensure_future(abort.event.wait())
    watched = {exited, *([aborted] if aborted else [])}
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return TIMED_OUT
            running = {pump for pump in pumps if not pump.done()}
            done, _ = await asyncio.wait(
                watched | running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if any(_failure(pump) for pump in pumps):
                return PUMP_FAILED
            if exited in done:
                return EXITED
            if aborted is not None and aborted in done:
                return ABORTED
            # only a pump reached end of file (the process closed a pipe): keep waiting
    finally:
        for future in watched:
            future.cancel()


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The exit status as soon as the process is reaped. Not ``proc.wait()``: before Python
    3.12 that also waits for the pipes to close, which a leftover grandchild can hold open."""
    while proc.returncode is None:
        await asyncio.sleep(EXIT_POLL_S)
    return proc.returncode


def _failure(pump: asyncio.Task[None]) -> BaseException | None:
    return pump.exception() if pump.done() and not pump.cancelled() else None


async def _drain(pumps: Sequence[asyncio.Task[None]]) -> BaseException | None:
    """Let the pumps read what is left; the first pump error, if any."""
    _, pending = await asyncio.wait(pumps, timeout=PUMP_DRAIN_TIMEOUT_S)
    for pump in pending:
        log.warning("output pipe still open after the process tree ended; closing it")
        pump.cancel()
    return next((e for e in map(_failure, pumps) if e is not None), None)


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    sink: LineSink,
    abort: AbortSignal | None = None,
    grace: float = 10.0,
    timeout: float | None = None,
    on_start: Callable[[int], None] | None = None,
    stop_signals: Sequence[signal.Signals] = (signal.SIGTERM,),
) -> ExitInfo:
    """Run ``argv`` to its end, its stdout (level info) and stderr (level error) into ``sink``.

    An abort or the timeout sends ``stop_signals`` to the whole tree (in order; SIGINT first
    for a clearml SDK script, which swallows SIGTERM), then SIGKILL after ``grace``.

    Raises StageError when the program cannot be started, and re-raises a sink error (e.g. the
    spool's disk is full) after ending the process. No process of the task outlives this call.
    ``on_start(pid)`` is called once the process exists (e.g. ``TaskMonitor.attach``).
    """
    marker = new_marker()
    started = time.monotonic()
    proc, stdout, stderr = await _spawn(argv, cwd, env, marker)
    tree = ProcessTree(proc.pid, marker)
    pumps = [
        asyncio.create_task(_pump(stdout, "info", sink), name=f"stdout:{proc.pid}"),
        asyncio.create_task(_pump(stderr, "error", sink), name=f"stderr:{proc.pid}"),
    ]
    sampler = asyncio.create_task(tree.watch(), name=f"tree:{proc.pid}")
    deadline = started + timeout if timeout else None
    log.info("process started", pid=proc.pid, argv=list(argv), cwd=str(cwd))
    try:
        if on_start is not None:
            on_start(proc.pid)
        ending = await _first_ending(proc, abort, deadline, pumps)
        if ending != EXITED:
            log.info("ending process", pid=proc.pid, why=ending, grace=grace)
            await tree.terminate(grace, stop_signals)
        returncode = await _exited(proc)
        leftovers = await tree.terminate(min(grace, LEFTOVER_GRACE_S), stop_signals)
    except BaseException:
        # Cancelled (or crashed) mid-run: kill everything now and reap; never leave orphans.
        tree.signal_all(signal.SIGKILL)
        for pump in pumps:
            pump.cancel()
        await asyncio.shield(_exited(proc))
        raise
    finally:
        sampler.cancel()
    duration = time.monotonic() - started
    error = await _drain(pumps)
    if error is not None:
        raise error
    if leftovers:
        log.info("killed leftover processes", pid=proc.pid, count=leftovers)
    aborted = ((abort.reason if abort else None) or "aborted") if ending == ABORTED else None
    return _exit_info(returncode, ending, aborted, duration, tree.peak_rss, timeout, leftovers)


def _exit_info(
    returncode: int,
    ending: str,
    aborted: str | None,
    duration: float,
    max_rss: int,
    timeout: float | None,
    leftovers: int,
) -> ExitInfo:
    """Pure: what happened, from how the wait ended and the reaped status (negative: a
    signal's number)."""
    return ExitInfo(
        returncode=returncode if returncode >= 0 else None,
        signal=-returncode if returncode < 0 else None,
        aborted=aborted,
        timed_out=ending == TIMED_OUT,
        duration=duration,
        max_rss=max_rss,
        timeout=timeout,
        leftovers=leftovers,
    )
