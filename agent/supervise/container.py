"""Running a task's process in its container: attach, release, wait, stop, read the ending.

The container is created holding (its first process waits for a word from the agent, see
:mod:`agent.pipeline.container`); this module is the container's :func:`run_process`:

1. attach to the container's stdout and stderr (kept apart) *before* the task starts, so no line
   is missed; a pump thread cuts them into lines, stdout at level info and stderr at level error,
   into the sink (the task's LogShipper: the same spool, batching and retries as on the host);
2. release the task: the container's first process execs it (under docker's init, so signals
   reach it);
3. wait for the container to exit, an abort, the deadline or a failing pump; on anything but an
   exit: ``stop(timeout=grace)`` (SIGTERM through the init, SIGKILL after ``grace``), then
   ``kill`` if it still runs;
4. the exit code and ``OOMKilled`` come from the container's state;
5. the pump drains what the stream still holds.

The container is not removed here: the sandbox removes it after the task's report (with
:func:`remove_container`); :func:`collect_exec_output` reads the output of a command executed in
it (the environment stage's steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import docker.errors
import structlog

from agent.supervise.lines import LineSplitter
from agent.supervise.process import (
    ABORTED,
    EXITED,
    LINGER_S,
    PUMP_DRAIN_TIMEOUT_S,
    PUMP_FAILED,
    TIMED_OUT,
    AbortSignal,
    ExitInfo,
    LineSink,
)

log = structlog.get_logger()

STDOUT, STDERR = "info", "error"  # log levels of the two streams
MAX_BATCH_LINES = 2000  # lines waiting for the sink that are handed over at once


@dataclass(frozen=True)
class ContainerExit:
    info: ExitInfo
    oom_killed: bool  # the kernel killed a process of the container for memory


def _pump(stream: Iterable[tuple[bytes | None, bytes | None]], sink: LineSink) -> None:
    """Demultiplexed frames → lines (stamped when read) → the sink, a batch at a time. Runs
    in a thread; raises the sink's error (after handing it every line anyway)."""
    splitters = {STDOUT: LineSplitter(), STDERR: LineSplitter()}
    batch = _Batch(sink)
    try:
        for out, err in stream:
            now = time.time()
            for level, chunk in ((STDOUT, out), (STDERR, err)):
                if chunk and (lines := splitters[level].feed(chunk, now)):
                    batch.add(level, lines, now)
        now = time.time()
        for level, splitter in splitters.items():
            if lines := splitter.finish(now):
                batch.add(level, lines, now)
    finally:
        batch.close()


class _Batch:
    """Lines of both streams in arrival order, handed to the sink in runs. A container that
    prints line by line arrives one frame a line; like the host's pipe pump, the lines go to
    the sink (one spool record per run) at most ``LINGER_S`` after they came, or at once when
    ``MAX_BATCH_LINES`` wait. A flusher thread keeps that promise when no frame follows."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()  # the pending runs
        self._flushing = threading.Lock()  # one flush at a time: runs keep their order
        self._runs: list[tuple[str, list[str], float]] = []
        self._count = 0
        self._failure: OSError | None = None
        self._pending = threading.Event()
        self._stop = False
        self._flusher = threading.Thread(target=self._flush_soon, name="container-lines")
        self._flusher.start()

    def add(self, level: str, lines: list[str], ts: float) -> None:
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._runs and self._runs[-1][0] == level:
                self._runs[-1][1].extend(lines)
            else:
                self._runs.append((level, list(lines), ts))
            self._count += len(lines)
            full = self._count >= MAX_BATCH_LINES
        if full:
            self.flush()
        else:
            self._pending.set()

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                runs, self._runs, self._count = self._runs, [], 0
            for level, lines, ts in runs:
                try:
                    self._sink.write_lines(lines, level, ts)
                except OSError as exc:  # the spool's disk: the sink keeps the lines in memory
                    with self._lock:
                        self._failure = self._failure or exc

    def _flush_soon(self) -> None:
        while True:
            self._pending.wait()
            if self._stop:
                return
            self._pending.clear()  # before the flush's swap: a later add wakes the next round
            time.sleep(LINGER_S)  # let the lines of a line-by-line printer gather
            self.flush()

    def close(self) -> None:
        """Stop the flusher, hand over the rest; raise the sink's first error."""
        self._stop = True
        self._pending.set()
        self._flusher.join()
        self.flush()
        if self._failure is not None:
            raise self._failure


def _wait(container: Any) -> None:
    try:
        container.wait()
    except docker.errors.NotFound:
        return  # removed under us (agent shutting down): it certainly stopped


def stop_container(
    container: Any, grace: float, stop_signals: Sequence[signal.Signals] = (signal.SIGTERM,)
) -> None:
    """``stop_signals`` other than SIGTERM first, then SIGTERM (both through the init process),
    ``grace`` seconds, SIGKILL; then make sure."""
    try:
        for sig in stop_signals:
            if sig != signal.SIGTERM:
                with contextlib.suppress(docker.errors.APIError):  # exited: stop() says so
                    container.kill(signal=int(sig))
        container.stop(timeout=math.ceil(grace))
        container.reload()
        if container.status == "running":
            container.kill()
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        log.warning("container stop failed, killing it", container=container.id, error=str(exc))
        with contextlib.suppress(docker.errors.APIError):
            container.kill()


async def _first_ending(
    waiter: asyncio.Future[None],
    pump: asyncio.Future[None],
    abort: AbortSignal,
    deadline: float | None,
) -> str:
    aborted = asyncio.ensure_future(abort.event.wait())
    watched: set[asyncio.Future[Any]] = {waiter, pump, aborted}
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return TIMED_OUT
            done, _ = await asyncio.wait(
                watched, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if pump in done and pump.exception() is not None:
                return PUMP_FAILED
            if waiter in done:
                return EXITED
            if aborted in done:
                return ABORTED
            watched.discard(pump)  # the streams closed before the exit: keep waiting
    finally:
        aborted.cancel()


async def run_container(
    container: Any,
    *,
    release: Callable[[], None],
    sink: LineSink,
    abort: AbortSignal,
    grace: float = 10.0,
    timeout: float | None = None,
    on_start: Callable[[int], None] | None = None,
    stop_signals: Sequence[signal.Signals] = (signal.SIGTERM,),
) -> ContainerExit:
    """Run the task held in ``container`` to its end; its output into ``sink``.

    Re-raises a sink error (the spool's disk is full) after stopping the container. The
    container is stopped when this returns or raises (cancellation included).
    """
    stream = await asyncio.to_thread(
        container.attach, stdout=True, stderr=True, stream=True, demux=True, logs=False
    )
    pump = asyncio.ensure_future(asyncio.to_thread(_pump, stream, sink))
    started = time.monotonic()
    deadline = started + timeout if timeout else None
    try:
        await asyncio.to_thread(release)
        waiter = asyncio.ensure_future(asyncio.to_thread(_wait, container))
        await asyncio.to_thread(container.reload)
        if on_start is not None and container.attrs["State"].get("Pid"):
            on_start(int(container.attrs["State"]["Pid"]))
        log.info("container task started", container=container.id[:12])
        ending = await _first_ending(waiter, pump, abort, deadline)
        if ending != EXITED:
            log.info("stopping container", container=container.id[:12], why=ending, grace=grace)
            await asyncio.to_thread(stop_container, container, grace, stop_signals)
        await waiter
        await asyncio.to_thread(container.reload)
    except BaseException:
        # Cancelled (or the engine failed) mid-run: never leave the task running.
        with contextlib.suppress(docker.errors.DockerException, OSError):
            container.kill()
        stream.close()
        raise
    duration = time.monotonic() - started
    await _drain(pump, stream)
    state = container.attrs["State"]
    return ContainerExit(
        info=ExitInfo(
            returncode=int(state.get("ExitCode", -1)),
            signal=None,
            aborted=(abort.reason or "aborted") if ending == ABORTED else None,
            timed_out=ending == TIMED_OUT,
            duration=duration,
            timeout=timeout,
        ),
        oom_killed=bool(state.get("OOMKilled")),
    )


async def _drain(pump: asyncio.Future[None], stream: Any) -> None:
    """Let the pump read what is left; re-raise its error (a sink that failed)."""
    done, _ = await asyncio.wait({pump}, timeout=PUMP_DRAIN_TIMEOUT_S)
    if not done:
        log.warning("container output stream still open after it stopped; closing it")
        # The pump thread ends with the closed socket's error, whatever its type: collected
        # here so it is not reported as never retrieved.
        pump.add_done_callback(lambda f: f.cancelled() or f.exception())
        stream.close()
        return
    error = pump.exception()
    if error is not None:
        raise error


def engine_reason(exc: BaseException) -> str:
    """The engine's own explanation of a failed request, else the error's text."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip() or type(exc).__name__


def remove_container(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:  # e.g. a removal already in progress
        log.warning("container not removed", container=container.short_id, error=engine_reason(exc))


def collect_exec_output(stream: Any, on_line: Callable[[str, str], None] | None) -> tuple[str, str]:
    """An exec's demultiplexed output, decoded; each line also to ``on_line`` as it comes."""
    chunks: dict[str, list[bytes]] = {"info": [], "error": []}
    splitters = {"info": LineSplitter(), "error": LineSplitter()}
    for out, err in stream:
        for level, chunk in (("info", out), ("error", err)):
            if not chunk:
                continue
            chunks[level].append(chunk)
            if on_line is not None:
                for line in splitters[level].feed(chunk, time.time()):
                    on_line(line, level)
    if on_line is not None:
        for level, splitter in splitters.items():
            for line in splitter.finish(time.time()):
                on_line(line, level)
    text = {k: b"".join(v).decode("utf-8", errors="replace") for k, v in chunks.items()}
    return text["info"], text["error"]
