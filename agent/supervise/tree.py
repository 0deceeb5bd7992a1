"""Finding every process a task started, including the ones that tried to leave.

A task runs in its own session and process group, so ``killpg`` reaches most of it. Processes
that call ``setsid()`` (daemonising data loaders, ``nohup``/``setsid`` wrappers) leave the group;
two nets catch them:

1. while the task runs, its descendants are sampled every ``interval`` seconds with psutil and
   remembered (a psutil ``Process`` remembers its start time, so a reused pid is never killed);
2. every process of the task carries a marker variable in its environment (inherited across
   fork, setsid and exec); a scan for it finds escapees that were orphaned between samples.

The marker also names the agent process that started the task (its pid and start time), so a
task left running by an agent that died (SIGKILL, OOM killer, power-cycled service manager) is
recognised by the next agent that starts on the machine: :func:`kill_orphans`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil
import structlog

log = structlog.get_logger()

MARKER_VAR = "CONVEYOR_PROCESS_TREE"
TASK_VAR = "CONVEYOR_TASK_ID"  # set for every task (plan.sdk_env): named in the orphan report
SAMPLE_INTERVAL_S = 0.5
POLL_S = 0.05
KILL_WAIT_S = 5.0  # SIGKILL cannot be refused, but a process in D state takes its time
GONE_STATUSES = frozenset({psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})
# "<owner pid>-<owner start time in 1/100 s>.<random>": who started the task, and which task
_MARKER = re.compile(r"^(?P<pid>\d+)-(?P<started>\d+)\.[0-9a-f]+$")
START_TIME_TOLERANCE = 1  # 1/100 s: the same process always reads the same start time


@functools.lru_cache(maxsize=4)
def _owner(pid: int) -> str:
    """``<pid>-<start time>`` of process ``pid``: unique for as long as the machine is up."""
    return f"{pid}-{round(psutil.Process(pid).create_time() * 100)}"


def new_marker() -> str:
    """A fresh marker for one task, naming this process as its owner."""
    return f"{_owner(os.getpid())}.{secrets.token_hex(8)}"


def owner_gone(marker: str) -> bool:
    """Pure enough (reads the process table): True when the process that started the task
    carrying ``marker`` no longer exists (a reused pid is told apart by its start time). A
    marker of unknown shape is never taken for an orphan's."""
    match = _MARKER.match(marker)
    if match is None:
        return False
    try:
        started = round(psutil.Process(int(match["pid"])).create_time() * 100)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False  # another user's process: it exists, and it is not ours to judge
    return abs(started - int(match["started"])) > START_TIME_TOLERANCE


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() not in GONE_STATUSES
    except psutil.Error:
        return False


class ProcessTree:
    """The processes of one task, rooted at ``pid`` (also its process group id)."""

    def __init__(self, pid: int, marker: str) -> None:
        self.pid = pid
        self.marker = marker
        self._known: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()  # sample() also runs in a worker thread
        self.peak_rss = 0  # bytes, the largest sampled total RSS of the tree
        with contextlib.suppress(psutil.Error):  # a very short process may be gone already
            self._known[pid] = psutil.Process(pid)

    def sample(self) -> None:
        """Remember the current descendants, forget the dead, account the tree's memory.

        One pass over the process table (pid → parent), then a walk down from every live
        known process: processes orphaned since the last sample are still walked from.
        """
        children: dict[int, list[psutil.Process]] = {}
        for proc in psutil.process_iter(["ppid"]):
            children.setdefault(proc.info["ppid"], []).append(proc)
        live = [p for p in self._snapshot() if _alive(p)]
        frontier = [p.pid for p in live]
        found: list[psutil.Process] = []
        while frontier:
            for child in children.get(frontier.pop(), []):
                found.append(child)
                frontier.append(child.pid)
        with self._lock:
            self._known = {p.pid: p for p in live} | {
                p.pid: self._known.get(p.pid, p) for p in found
            }
        rss = 0
        for proc in self._snapshot():
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss if _alive(proc) else 0
        self.peak_rss = max(self.peak_rss, rss)

    def _snapshot(self) -> list[psutil.Process]:
        with self._lock:
            return list(self._known.values())

    def _remember(self, procs: list[psutil.Process]) -> None:
        with self._lock:
            for proc in procs:
                self._known.setdefault(proc.pid, proc)

    async def watch(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        """Sample until cancelled (a side task of :func:`run_process`)."""
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(interval)

    def _scan_marker(self) -> None:
        known = {p.pid for p in self._snapshot()} | {os.getpid()}
        found = []
        for proc in psutil.process_iter():
            if proc.pid in known:
                continue
            try:
                if proc.environ().get(MARKER_VAR) == self.marker:
                    found.append(proc)
            except psutil.Error:
                continue  # not ours to read (another user), or gone meanwhile
        self._remember(found)

    def alive(self) -> list[psutil.Process]:
        """Every live process of the task: sampled, group members' children, marker holders."""
        self.sample()
        self._scan_marker()
        return [p for p in self._snapshot() if _alive(p)]

    def signal_all(self, *sigs: signal.Signals) -> int:
        """Send each of ``sigs`` once, in order, to every live process of the task: the group
        with ``killpg``, the ones that left it one by one (a second SIGTERM could hit a process
        in its clean-up handler, or after Python restored the default action on exit). How
        many there were.

        While the task's main process runs, the group is signalled before the scan for
        escapees (tens of milliseconds on a busy machine): a stop is not delayed by it. After
        it exited (leftovers), the scan comes first, so processes that die at once are counted.
        """
        known = {p.pid for p in self._snapshot() if _alive(p)}
        early = self.pid in known
        if early:
            self._signal_group(sigs)
        procs = self.alive()
        if not early:
            self._signal_group(sigs)
        for sig in sigs:
            for proc in procs:
                with contextlib.suppress(psutil.Error, ProcessLookupError):
                    if os.getpgid(proc.pid) != self.pid:
                        proc.send_signal(sig)
        return len(known | {p.pid for p in procs})

    def _signal_group(self, sigs: Sequence[signal.Signals]) -> None:
        for sig in sigs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    async def wait_gone(self, deadline: float) -> bool:
        """Wait (until the monotonic ``deadline``) for every member to exit; True if they did."""
        while True:
            procs = [p for p in self._snapshot() if _alive(p)]
            if not procs:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)

    async def terminate(
        self, grace: float, stop_signals: Sequence[signal.Signals] = (signal.SIGTERM,)
    ) -> int:
        """Send ``stop_signals`` to everything, wait up to ``grace`` s, SIGKILL what is left;
        how many live processes there were."""
        found = self.signal_all(*stop_signals)
        if not found or await self.wait_gone(time.monotonic() + grace):
            return found
        killed = self.signal_all(signal.SIGKILL)
        log.info("process tree killed after grace", pid=self.pid, killed=killed, grace=grace)
        if not await self.wait_gone(time.monotonic() + KILL_WAIT_S):
            log.error("processes survived SIGKILL", pid=self.pid, left=len(self.alive()))
        return found


@dataclass(frozen=True)
class Orphan:
    pid: int
    task_id: str  # "" when the process does not say


def find_orphans() -> list[tuple[psutil.Process, str]]:
    """Live processes of tasks whose agent is gone, with their task ids."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            environ = proc.environ()
        except psutil.Error:
            continue  # gone meanwhile, or another user's (not ours to kill)
        marker = environ.get(MARKER_VAR, "")
        if marker and owner_gone(marker) and _alive(proc):
            found.append((proc, environ.get(TASK_VAR, "")))
    return found


def kill_orphans(grace: float) -> list[Orphan]:
    """Terminate every process left by tasks of agents that died: SIGTERM, ``grace`` seconds,
    then SIGKILL. Blocking (run it in a thread). What was found."""
    found = find_orphans()
    procs = [proc for proc, _ in found]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    if not _wait_all_gone(procs, time.monotonic() + grace):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if _alive(proc):
                    proc.kill()
        if not _wait_all_gone(procs, time.monotonic() + KILL_WAIT_S):
            log.error("orphans survived SIGKILL", pids=[p.pid for p in procs if _alive(p)])
    return [Orphan(proc.pid, task_id) for proc, task_id in found]


def _wait_all_gone(procs: list[psutil.Process], deadline: float) -> bool:
    # Not psutil.wait_procs: these are not our children, and a zombie nobody reaps counts
    # as gone here (it holds no memory, GPU or files any more).
    while any(_alive(p) for p in procs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True
