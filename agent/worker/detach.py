"""``conveyor daemon --detached`` / ``--stop``: an agent in the background, found by worker id.

As clearml-agent's namesakes: ``--detached`` starts the same daemon command in its own session
with its output in a log file and returns; ``--stop`` stops the background agent of this worker
id. The pid file is ``<data_dir>/run/<worker id>.pid``; a pid is only signalled while its
process is still a ``conveyor daemon`` (a recycled pid is never hit).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from agent.config.settings import Settings

READY_WAIT_S = 120.0  # how long --detached waits for "agent ready" (or an early death)
READY_MARK = b"agent ready"
STOP_WAIT_S = 60.0


class DetachError(RuntimeError):
    """The background agent could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class Paths:
    pid: Path
    log: Path


def paths_for(settings: Settings) -> Paths:
    """Pure: where the pid and the log of this worker id's background agent live."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.effective_worker_id)
    run = settings.data_dir / "run"
    return Paths(pid=run / f"{safe}.pid", log=run / f"{safe}.log")


def foreground_argv(argv: list[str]) -> list[str]:
    """Pure: this command line without ``--detached``, run as ``python -m agent``."""
    return [sys.executable, "-m", "agent", *(a for a in argv[1:] if a != "--detached")]


def _running_daemon(pid_file: Path) -> psutil.Process | None:
    try:
        pid = int(pid_file.read_text().strip())
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
    except (OSError, ValueError, psutil.Error):
        return None
    return proc if "daemon" in cmdline and ("agent" in cmdline or "conveyor" in cmdline) else None


def spawn(settings: Settings, argv: list[str]) -> tuple[int, Path]:
    """Start the daemon in the background; its pid and log file."""
    paths = paths_for(settings)
    if _running_daemon(paths.pid) is not None:
        raise DetachError(
            f"an agent with worker id {settings.effective_worker_id!r} is running "
            f"(pid file {paths.pid}); stop it with `conveyor daemon --stop`"
        )
    paths.pid.parent.mkdir(parents=True, exist_ok=True)
    offset = paths.log.stat().st_size if paths.log.exists() else 0
    with paths.log.open("ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            foreground_argv(argv), stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    paths.pid.write_text(f"{proc.pid}\n")
    _wait_ready(proc, paths.log, offset)
    return proc.pid, paths.log


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, offset: int) -> None:
    """Until the daemon logs that it is ready; an exit before that is an error with its log."""
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        with log.open("rb") as fh:
            fh.seek(offset)
            if READY_MARK in fh.read():
                return
        try:
            code = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        tail = log.read_bytes()[offset:][-2000:].decode(errors="replace")
        log.with_name(log.stem + ".pid").unlink(missing_ok=True)
        raise DetachError(f"the daemon exited at once (code {code}); its log {log}:\n{tail}")
    raise DetachError(f"the daemon (pid {proc.pid}) is not ready after {READY_WAIT_S:g} s: {log}")


def stop(settings: Settings) -> int:
    """Stop the background agent of this worker id: SIGTERM twice (running tasks are stopped
    and reported ``stopped``), then wait for it to exit. Its pid."""
    paths = paths_for(settings)
    proc = _running_daemon(paths.pid)
    if proc is None:
        paths.pid.unlink(missing_ok=True)
        raise DetachError(
            f"no background agent with worker id {settings.effective_worker_id!r} "
            f"(no live pid in {paths.pid})"
        )
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except psutil.TimeoutExpired as exc:
        raise DetachError(f"agent pid {proc.pid} still running after {STOP_WAIT_S:g} s") from exc
    paths.pid.unlink(missing_ok=True)
    return proc.pid
