"""The six scenarios. Each runs both agents in alternation (the order flips every round) against
the one server and appends Samples (and Notes for what could not be measured)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench.compare import tasks as t
from bench.compare.agents import TASK_PYTHON, AgentKind, AgentUnavailable, Running
from bench.compare.report import Note, Sample, percentile
from bench.compare.server import Api, BenchServer, Body

TASK_TIMEOUT = 900.0  # a cold environment on a busy 2-core machine
LOG_TIMEOUT = 3600.0
ABORT_TIMEOUT = 120.0
IDLE_SETTLE = 10.0
SAMPLE_EVERY = 1.0
CUT = 65536  # clearml-agent's maximum log message length


@dataclass
class Bench:
    server: BenchServer
    api: Api
    work: Path
    agents: Sequence[AgentKind]
    runs: int
    samples: list[Sample] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    _queues: dict[str, str] = field(default_factory=dict)

    def queue(self, agent: AgentKind) -> tuple[str, str]:
        """(name, id) of the agent's own queue."""
        name = f"bench-{agent.name}"
        if name not in self._queues:
            self._queues[name] = str(self.api("queues.create", {"name": name})["id"])
        return name, self._queues[name]

    def home(self, agent: AgentKind, label: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{agent.name}-{label}-", dir=self.work))

    def order(self, round_: int) -> list[AgentKind]:
        return list(self.agents) if round_ % 2 == 0 else list(reversed(self.agents))

    def add(self, scenario: str, metric: str, agent: AgentKind | str, value: float) -> None:
        name = agent if isinstance(agent, str) else agent.name
        self.samples.append(Sample(scenario, metric, name, float(value)))
        print(f"  {scenario}.{metric} {name}: {value:.4f}", file=sys.stderr, flush=True)

    def note(self, scenario: str, agent: AgentKind | str, text: str) -> None:
        name = agent if isinstance(agent, str) else agent.name
        self.notes.append(Note(scenario, name, text))
        print(f"  NOTE {scenario} {name}: {text}", file=sys.stderr, flush=True)

    def start(self, agent: AgentKind, home: Path, env: dict[str, str] | None = None) -> Running:
        return agent.start(self.server, home, self.queue(agent)[0], env)

    def failures_text(self, since: float, agent: AgentKind) -> str:
        failures = [f for f in self.server.recorder.failures_since(since) if f.client == agent.name]
        return "; ".join(
            f"{f.method} {f.path} → {f.status} {f.response[:300]} (request {f.request[:300]})"
            for f in failures[:5]
        )


@contextmanager
def running(bench: Bench, agent: AgentKind, home: Path) -> Iterator[Running]:
    proc = bench.start(agent, home)
    try:
        yield proc
    finally:
        proc.stop(agent.stop_signals)


def guarded(
    bench: Bench, scenario: str, agent: AgentKind, since: float, fn: Callable[[], None]
) -> bool:
    """Run one measurement; a failure becomes a Note (with failing requests), not a crash."""
    try:
        fn()
        return True
    except (t.TaskFailed, TimeoutError, AgentUnavailable, RuntimeError) as exc:
        failing = bench.failures_text(since, agent)
        extra = f" Failing requests: {failing}" if failing else ""
        bench.note(scenario, agent, f"{type(exc).__name__}: {str(exc)[:1500]}{extra}")
        traceback.print_exc()
        return False


# --- 1. pickup ----------------------------------------------------------------------------------
def pickup(bench: Bench) -> None:
    body = t.script(t.FIRST_LINE, "first.py")
    procs = {a.name: bench.start(a, bench.home(a, "pickup")) for a in bench.agents}
    try:
        for agent in bench.agents:  # warm-up: caches, interpreter discovery, first venv
            _, queue_id = bench.queue(agent)
            st = t.run_until_first_line(
                bench.api, bench.server.recorder, queue_id, "warm-up", body, TASK_TIMEOUT
            )
            t.wait_final(bench.api, st.task_id, TASK_TIMEOUT)
        for round_ in range(bench.runs):
            for agent in bench.order(round_):
                _, queue_id = bench.queue(agent)

                def one(agent: AgentKind = agent, queue_id: str = queue_id) -> None:
                    st = t.run_until_first_line(
                        bench.api, bench.server.recorder, queue_id, "pickup", body, TASK_TIMEOUT
                    )
                    bench.add("pickup", "first_line", agent, st.first_line - st.enqueued)
                    bench.add("pickup", "visible", agent, st.visible - st.enqueued)
                    doc = t.wait_final(bench.api, st.task_id, TASK_TIMEOUT)
                    if doc["status"] != "completed":
                        raise t.TaskFailed(t.describe_failure(bench.api, st.task_id))

                guarded(bench, "pickup", agent, time.time(), one)
    finally:
        for agent in bench.agents:
            procs[agent.name].stop(agent.stop_signals)


# --- 2. cold environments -------------------------------------------------------------------
def stage_seconds(log_text: str, task_id: str) -> float | None:
    """Conveyor's own environment stage time for a task, from its JSON log."""
    for line in log_text.splitlines():
        if '"environment.ready"' in line and task_id in line:
            return float(json.loads(line)["seconds"])
    return None


def cold_environment(bench: Bench, scenario: str, packages: tuple[str, ...]) -> None:
    body = t.script(t.FIRST_LINE, "env.py", packages)
    for round_ in range(bench.runs):
        for agent in bench.order(round_):
            home = bench.home(agent, scenario)

            def one(agent: AgentKind = agent, home: Path = home) -> None:
                _, queue_id = bench.queue(agent)
                with running(bench, agent, home) as proc:
                    st = t.run_until_first_line(
                        bench.api, bench.server.recorder, queue_id, scenario, body, TASK_TIMEOUT
                    )
                    doc = t.wait_final(bench.api, st.task_id, TASK_TIMEOUT)
                    if doc["status"] != "completed":
                        raise t.TaskFailed(t.describe_failure(bench.api, st.task_id))
                    _record_start(bench, scenario, agent, st, proc, "")

            guarded(bench, scenario, agent, time.time(), one)
            shutil.rmtree(home, ignore_errors=True)


def _record_start(
    bench: Bench, scenario: str, agent: AgentKind, st: t.Started, proc: Running, prefix: str
) -> None:
    if st.claimed is None:
        bench.note(scenario, agent, f"no tasks.started seen for {st.task_id}")
    else:
        bench.add(scenario, f"{prefix}claim_to_first_line", agent, st.first_line - st.claimed)
    if not prefix:
        bench.add(scenario, "enqueue_to_first_line", agent, st.first_line - st.enqueued)
    seconds = stage_seconds(proc.log(), st.task_id)
    if seconds is not None and prefix != "cold_":
        bench.add(scenario, "stage", agent, seconds)


# --- 3. warm torch --------------------------------------------------------------------------
def warm_torch(bench: Bench) -> None:
    body = t.script(t.TORCH_SCRIPT, "torch_task.py", t.TORCH_REQUIREMENTS)
    procs: dict[str, Running] = {}
    try:
        for agent in bench.agents:
            _, queue_id = bench.queue(agent)

            def cold(agent: AgentKind = agent, queue_id: str = queue_id) -> None:
                env = agent.find_links_env(t.TORCH_WHEELS)
                procs[agent.name] = bench.start(agent, bench.home(agent, "torch"), env)
                _torch_task(bench, agent, queue_id, body, procs[agent.name], "cold_")

            guarded(bench, "torch", agent, time.time(), cold)
        for round_ in range(bench.runs):
            for agent in bench.order(round_):
                if agent.name not in procs:
                    continue
                _, queue_id = bench.queue(agent)
                proc = procs[agent.name]
                warm = partial(_torch_task, bench, agent, queue_id, body, proc, "warm_")
                guarded(bench, "torch", agent, time.time(), warm)
    finally:
        for agent in bench.agents:
            if agent.name in procs:
                procs[agent.name].stop(agent.stop_signals)


def _torch_task(
    bench: Bench, agent: AgentKind, queue_id: str, body: dict[str, Any], proc: Running, prefix: str
) -> None:
    st = t.run_until_first_line(
        bench.api, bench.server.recorder, queue_id, "torch", body, TASK_TIMEOUT
    )
    doc = t.wait_final(bench.api, st.task_id, TASK_TIMEOUT)
    if doc["status"] != "completed" or t.TORCH_VERSION not in t.latest_log(bench.api, st.task_id):
        raise t.TaskFailed(t.describe_failure(bench.api, st.task_id))
    _record_start(bench, "torch", agent, st, proc, prefix)


# --- 4. log delivery ------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    lost: int
    lags: list[float]
    last_arrival: float
    last_printed: float


def reassemble(chunks: Iterable[tuple[float, str]]) -> Iterator[tuple[float, str]]:
    """Log lines from event messages in order, each with the arrival time of its chunk.

    clearml-agent cuts its messages at CUT characters even mid-line: a message of that length
    that does not end a line continues in the next one. Other messages are whole lines.
    """
    pending = ""
    pending_at = 0.0
    for at, msg in chunks:
        text = pending + msg
        pending = ""
        if len(msg) >= CUT and not msg.endswith("\n"):
            text, _, pending = text.rpartition("\n")
            pending_at = at
        for line in text.splitlines():
            yield at, line
    if pending:
        yield pending_at, pending


_FULL = re.compile(r"^L (\d+) (\d+\.\d+)$")
_PREFIX = re.compile(r"^L(?: (?:\d+(?: (?:\d+(?:\.\d*)?)?)?)?)?$")  # a line cut short


@dataclass(frozen=True)
class Numbered:
    at: float  # arrival of the chunk that completed the line
    index: int
    printed: float  # the script's clock when it printed the line
    split: bool  # the line reached the server broken over several log lines


def numbered(lines: Iterable[tuple[float, str]]) -> Iterator[Numbered]:
    """The log script's "L <index> <time>" lines. A line an agent broke over several log lines
    (clearml-agent sends what it has read of a partial line as a line of its own) is joined
    back and marked ``split``."""
    partial = ""
    for at, line in lines:
        if partial:
            joined = partial + line
            if _FULL.match(joined):
                found = _FULL.match(joined)
                assert found is not None
                yield Numbered(at, int(found[1]), float(found[2]), True)
                partial = ""
                continue
            partial = joined if _PREFIX.match(joined) else ""
            if partial:
                continue
        found = _FULL.match(line)
        if found:
            yield Numbered(at, int(found[1]), float(found[2]), False)
        elif _PREFIX.match(line):
            partial = line


def received_lines(bodies: Sequence[Body], lines: int) -> Delivery:
    """From the captured events.add_batch bodies: per line index, the first arrival's lag."""
    chunks = (
        (body.at, str(event.get("msg", "")))
        for body in sorted(bodies, key=lambda b: b.at)
        for event in _events_of(body.content)
        if event.get("type", "log") == "log"
    )
    first: dict[int, float] = {}
    last = printed = 0.0
    for line in numbered(reassemble(chunks)):
        if line.index not in first:
            first[line.index] = line.at - line.printed
            last = max(last, line.at)
            printed = max(printed, line.printed)
    return Delivery(lines - len(first), list(first.values()), last, printed)


def _events_of(raw: bytes) -> list[dict[str, Any]]:
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return []
    try:
        value = json.loads(text)
        return value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Stored:
    """What a reader of the task's log gets from the server."""

    indices: set[int]
    split: set[int]
    wall: tuple[float, float] | None  # the script's WALL line: (wall time, end time)


def stored_log(api: Api, task_id: str) -> Stored:
    chunks = ((0.0, str(e.get("msg", ""))) for e in t.all_log_events(api, task_id))
    lines = list(reassemble(chunks))
    indices: set[int] = set()
    split: set[int] = set()
    for line in numbered(lines):
        indices.add(line.index)
        if line.split:
            split.add(line.index)
    # The WALL line may be split too: look at the tail with the line breaks removed.
    wall = t.wall_of("".join(text for _, text in lines[-50:]))
    return Stored(indices, split, wall)


def bare_wall(work: Path, lines: int) -> float:
    """The same script, same interpreter, without an agent: ``python -u script.py > file``."""
    path = work / "log_bare.py"
    path.write_text(t.log_script(lines))
    out = work / "log_bare.out"
    with out.open("wb") as fh:
        subprocess.run(
            [str(TASK_PYTHON), "-u", str(path)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=LOG_TIMEOUT,
        )
    wall = t.wall_of(out.read_text())
    out.unlink()
    if wall is None:
        raise RuntimeError("the bare run printed no WALL line")
    return wall[0]


def log_delivery(bench: Bench, scenario: str, lines: int, rate: int = 0) -> None:
    """``rate`` 0: the script prints as fast as it can, and its wall time is compared with a
    bare run (same script, same interpreter, ``> file``); else it prints ``rate`` lines/s."""
    body = t.script(t.log_script(lines, rate), "logs.py")
    recorder = bench.server.recorder
    procs = {a.name: bench.start(a, bench.home(a, scenario)) for a in bench.agents}
    try:
        for round_ in range(bench.runs):
            bare = None if rate else bare_wall(bench.work, lines)
            if bare is not None:
                bench.add(scenario, "wall", "bare", bare)
            for agent in bench.order(round_):
                _, queue_id = bench.queue(agent)
                recorder.capture = frozenset({"events.add_batch"})
                one = partial(_log_run, bench, scenario, agent, queue_id, body, lines, bare)
                try:
                    guarded(bench, scenario, agent, time.time(), one)
                finally:
                    recorder.capture = frozenset()
                    with recorder.lock:
                        recorder.bodies.clear()
    finally:
        for agent in bench.agents:
            procs[agent.name].stop(agent.stop_signals)


def _log_run(
    bench: Bench,
    scenario: str,
    agent: AgentKind,
    queue_id: str,
    body: dict[str, Any],
    lines: int,
    bare: float | None,
) -> None:
    sub = t.submit(bench.api, queue_id, "logs", body)
    doc = t.wait_final(bench.api, sub.task_id, LOG_TIMEOUT)
    if doc["status"] != "completed":
        raise t.TaskFailed(t.describe_failure(bench.api, sub.task_id))
    stored = stored_log(bench.api, sub.task_id)
    with bench.server.recorder.lock:
        bodies = [b for b in bench.server.recorder.bodies if b.client == agent.name]
    delivery = received_lines(bodies, lines)
    bench.add(scenario, "lost", agent, lines - len(stored.indices))
    bench.add(scenario, "split", agent, len(stored.split))
    if delivery.lags:
        bench.add(scenario, "lag_p50", agent, percentile(delivery.lags, 0.5))
        bench.add(scenario, "lag_p99", agent, percentile(delivery.lags, 0.99))
        bench.add(scenario, "lag_max", agent, max(delivery.lags))
        last = delivery.last_arrival - delivery.last_printed
        bench.add(scenario, "delivered_after", agent, last)
    found = stored.wall
    if found is None:
        bench.note(scenario, agent, f"no WALL line stored for {sub.task_id}")
        return
    wall, _ = found
    bench.add(scenario, "wall", agent, wall)
    if bare is not None:
        bench.add(scenario, "wall_ratio", agent, wall / bare)


# --- 5. abort -------------------------------------------------------------------------------
def abort(bench: Bench, scenario: str = "abort", sdk: bool = False) -> None:
    """A plain script (``abort``) or a clearml SDK script (``abort_sdk``), each with a child
    and a grandchild: ``tasks.stop`` → all three gone, → status stopped."""
    if sdk:
        body = t.script(t.ABORT_SDK_SCRIPT, "abort_sdk_task.py", t.SDK_REQUIREMENTS)
    else:
        body = t.script(t.ABORT_SCRIPT, "abort_task.py")
    procs = {a.name: bench.start(a, bench.home(a, scenario)) for a in bench.agents}
    try:
        for round_ in range(bench.runs):
            for agent in bench.order(round_):
                _, queue_id = bench.queue(agent)
                one = partial(_abort_run, bench, agent, queue_id, body, scenario)
                guarded(bench, scenario, agent, time.time(), one)
    finally:
        for agent in bench.agents:
            procs[agent.name].stop(agent.stop_signals)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _abort_run(
    bench: Bench, agent: AgentKind, queue_id: str, body: dict[str, Any], scenario: str
) -> None:
    sub = t.submit(bench.api, queue_id, scenario, body)

    def three_pids() -> list[psutil.Process] | None:
        pids = t.pids_of(t.latest_log(bench.api, sub.task_id))
        if len(pids) < 3:
            if t.status(bench.api, sub.task_id).get("status") in t.FINAL:
                raise t.TaskFailed(t.describe_failure(bench.api, sub.task_id))
            return None
        return [psutil.Process(p) for p in pids[:3]]

    tree = t.wait_for(three_pids, TASK_TIMEOUT, "the abort task's three processes")
    stop_at = time.time()
    bench.api("tasks.stop", {"task": sub.task_id})
    gone: float | None = None
    stopped: float | None = None
    deadline = time.monotonic() + ABORT_TIMEOUT
    while time.monotonic() < deadline and (gone is None or stopped is None):
        if gone is None and not any(_alive(p) for p in tree):
            gone = time.time()
        if stopped is None and t.status(bench.api, sub.task_id).get("status") in t.FINAL:
            stopped = time.time()
        time.sleep(0.01)
    if gone is None:
        left = [p.pid for p in tree if _alive(p)]
        for p in tree:
            if _alive(p):
                p.kill()
        bench.note(
            scenario,
            agent,
            f"processes {left} still alive {ABORT_TIMEOUT:.0f} s after tasks.stop "
            "(killed by the harness)",
        )
    else:
        bench.add(scenario, "tree_gone", agent, gone - stop_at)
    if stopped is None:
        bench.note(
            scenario, agent, f"task {sub.task_id} not final {ABORT_TIMEOUT:.0f} s after tasks.stop"
        )
    else:
        final = t.status(bench.api, sub.task_id)
        if final.get("status") != "stopped":
            bench.note(
                scenario,
                agent,
                f"aborted task ended {final.get('status')}: {final.get('status_reason')}",
            )
        bench.add(scenario, "status_stopped", agent, stopped - stop_at)


# --- 6. idle --------------------------------------------------------------------------------
def idle(bench: Bench, window: float) -> None:
    homes = {a.name: bench.home(a, "idle") for a in bench.agents}
    for round_ in range(bench.runs):
        for agent in bench.order(round_):
            one = partial(_idle_run, bench, agent, homes[agent.name], window)
            guarded(bench, "idle", agent, time.time(), one)


def _cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
        return float(times.user + times.system)
    except psutil.NoSuchProcess:
        return 0.0


def _idle_run(bench: Bench, agent: AgentKind, home: Path, window: float) -> None:
    with running(bench, agent, home) as proc:
        time.sleep(IDLE_SETTLE)
        start_cpu: dict[int, float] = {p.pid: _cpu(p) for p in proc.tree()}
        start = time.time()
        rss: list[float] = []
        end_cpu: dict[int, float] = {}
        while time.time() - start < window:
            total = 0.0
            for p in proc.tree():
                end_cpu[p.pid] = _cpu(p)
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            rss.append(total / 2**20)
            time.sleep(SAMPLE_EVERY)
        end = time.time()
        used = sum(end_cpu.get(pid, 0.0) - start_cpu.get(pid, 0.0) for pid in end_cpu)
        requests = sum(bench.server.recorder.count(agent.name, start, end).values())
    bench.add("idle", "cpu_percent", agent, 100 * used / (end - start))
    bench.add("idle", "rss_mb", agent, sum(rss) / len(rss))
    bench.add("idle", "requests_per_min", agent, requests * 60 / (end - start))
