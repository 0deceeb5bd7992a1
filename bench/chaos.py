"""Chaos soak: agents and the control plane as separate processes under random faults.

    .venv/bin/python bench/chaos.py [--agents 3] [--tasks 60] [--duration 300] [--seed 1]
                                    [--lines 200] [--json out.json] [--keep DIR]

Starts ``conveyor server`` (loopback, its own database, ``--worker-timeout``) and ``--agents``
``conveyor daemon`` processes (own data directories, one shared cache), enqueues ``--tasks``
literal-script tasks that print ``--lines`` numbered lines (every sixth exits with code 3,
meant to fail), then for ``--duration`` seconds injects a fault every 10-20 s (``--gap``):
an agent SIGKILLed and started again after a pause (sometimes longer than the worker timeout,
so the server's watchdog notices), an agent SIGTERMed (it drains) and started again, the
server SIGKILLed and started again on the same database and port. Then it waits until every
task is final, stops everything and judges each task (bench/chaos_verdict.py): final status
right, attempts within the cap, the last attempt's lines complete, once, in order; no two
attempts at once (each task's trace file); nothing left running; no traceback in any log.
Prints the table; exit status 0 when every promise held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from agent.api.client import ApiClient  # noqa: E402
from bench.chaos_verdict import Expected, TaskVerdict, judge_task, markdown  # noqa: E402

CONVEYOR = ROOT / ".venv" / "bin" / "conveyor"
QUEUE = "chaos"
ACCESS_KEY, SECRET_KEY = "CHAOSSOAKACCESSKEY", "chaos-soak-secret-key-0123456789"
FAIL_EVERY = 6  # every sixth task exits with FAIL_CODE: it must end failed, not be retried
FAIL_CODE = 3
MAX_RETRIES = 4  # each task's own Conveyor/max_retries (the documented parameter)
LINE_DELAY_S = 0.05
WORKER_TIMEOUT_S = 15.0  # the server's: an agent away longer is taken for lost (> client back-off)
LONG_DOWN_S = 20.0  # an agent kept down past the worker timeout: the watchdog requeues
READY_S = 120.0
STOP_S = 120.0
TASK_SCRIPT = """\
import os, sys, time
lines, code, trace, delay = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
attempt = os.environ.get("CONVEYOR_ATTEMPT", "0")
fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for i in range(lines):
    os.write(fd, f"a{attempt} {i} {time.time():.6f}\\n".encode())
    print(f"chaos a{attempt} {i:04d}", flush=True)
    time.sleep(delay)
sys.exit(code)
"""


@dataclass
class Proc:
    """A ``conveyor`` process we start, kill and start again (one log file per incarnation)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    incarnation: int = 0

    def start(self) -> None:
        self.incarnation += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{self.name}.{self.incarnation}.log").open("wb") as log_file:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log_file, stderr=subprocess.STDOUT
            )

    def send(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        """The exit status, or None if it did not exit within ``timeout``."""
        if self.process is None:
            return 0
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        path = self.log_dir / f"{self.name}.{self.incarnation}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def ready(self, timeout: float) -> bool:
        """Wait until this incarnation says it is ready (signal handlers installed)."""
        deadline = time.monotonic() + timeout
        while '"agent ready"' not in self.log():
            if time.monotonic() > deadline or (self.process and self.process.poll() is not None):
                return False
            await asyncio.sleep(0.2)
        return True

    async def stop(self, sig: int = signal.SIGTERM, twice: bool = True) -> int | None:
        self.send(sig)
        if twice:
            self.send(sig)
        code = await self.wait(STOP_S)
        if code is None:
            self.send(signal.SIGKILL)
            await self.wait(10)
        return code


@dataclass
class Soak:
    root: Path
    agents: int
    tasks: int
    duration: float
    lines: int
    gap: tuple[float, float]
    rng: random.Random
    port: int = 0
    server: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))}
        return {
            **env,
            "CONVEYOR_ACCESS_KEY": ACCESS_KEY,
            "CONVEYOR_SECRET_KEY": SECRET_KEY,
            "CONVEYOR_CONFIG": "",
            "CONVEYOR_LOG_FORMAT": "json",
        }

    def make_processes(self) -> None:
        self.port = _free_port()
        db = self.root / "server" / "server.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(CONVEYOR), "server", "--port", str(self.port), "--db", str(db)]
        argv += ["--worker-timeout", str(WORKER_TIMEOUT_S)]
        env = {**self._base_env(), "CONVEYOR_DATA_DIR": str(db.parent)}
        self.server = Proc("server", argv, env, self.root / "logs")
        for i in range(self.agents):
            data = self.root / f"agent-{i}"
            env = {
                **self._base_env(),
                "CONVEYOR_API_HOST": self.url,
                "CONVEYOR_DATA_DIR": str(data),
                "CONVEYOR_CACHE_DIR": str(self.root / "cache"),
                "CONVEYOR_WORKER_ID": f"chaos-{i}",
                "CONVEYOR_HEARTBEAT_INTERVAL": "1",
                "CONVEYOR_WORKER_TIMEOUT": str(WORKER_TIMEOUT_S),
                "CONVEYOR_ABORT_POLL_INTERVAL": "0.5",
                "CONVEYOR_ABORT_GRACE": "2",
                "CONVEYOR_POLL_WAIT": "5",
            }
            argv = [str(CONVEYOR), "daemon", "--queue", QUEUE]
            self.workers.append(Proc(f"agent-{i}", argv, env, self.root / "logs"))

    async def enqueue(self, api: ApiClient) -> dict[str, tuple[str, Expected]]:
        queue = await api.create_queue(QUEUE)
        traces = self.root / "traces"
        traces.mkdir(parents=True, exist_ok=True)
        out: dict[str, tuple[str, Expected]] = {}
        for n in range(self.tasks):
            expected = Expected(self.lines, FAIL_CODE if n % FAIL_EVERY == FAIL_EVERY - 1 else 0)
            name = f"chaos-{n:03d}" + ("-fails" if expected.exit_code else "")
            args = f"{self.lines} {expected.exit_code} {traces / name} {LINE_DELAY_S}"
            script = {"diff": TASK_SCRIPT, "entry_point": f"chaos_task.py {args}"}
            cap = {"section": "Conveyor", "name": "max_retries", "value": str(MAX_RETRIES)}
            task_id = await api.create_task(
                name, script=script, hyperparams={"Conveyor": {"max_retries": cap}}
            )
            await api.enqueue(task_id, queue)
            out[task_id] = (name, expected)
        return out

    async def inject(self) -> None:
        """One fault every ``gap`` seconds until ``duration`` is over."""
        end = time.monotonic() + self.duration
        while time.monotonic() < end:
            await asyncio.sleep(self.rng.uniform(*self.gap))
            kind = self.rng.choice(
                ["agent SIGKILL", "agent SIGKILL", "agent SIGTERM", "server SIGKILL"]
            )
            self.faults[kind] += 1
            if kind == "server SIGKILL":
                await self._bounce(self._server, signal.SIGKILL, self.rng.uniform(1, 5))
                continue
            agent = self.rng.choice(self.workers)
            if kind == "agent SIGTERM":
                await self._bounce(agent, signal.SIGTERM, 0.5)
                continue
            down = LONG_DOWN_S if self.rng.random() < 0.3 else self.rng.uniform(0.5, 3)
            if down == LONG_DOWN_S:
                self.faults["(of which kept down past the worker timeout)"] += 1
            await self._bounce(agent, signal.SIGKILL, down)

    @property
    def _server(self) -> Proc:
        assert self.server is not None
        return self.server

    async def _bounce(self, proc: Proc, sig: int, down: float) -> None:
        proc.send(sig)  # SIGTERM: one signal, the agent drains its task first
        if await proc.wait(STOP_S) is None:
            self.problems.append(f"{proc.name} did not exit {STOP_S:.0f} s after signal {sig}")
            proc.send(signal.SIGKILL)
            await proc.wait(10)
        await asyncio.sleep(down)
        proc.start()

    async def wait_final(self, api: ApiClient, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            docs = await api.list_tasks(id=ids, only_fields=["id", "status"])
            if all(d.get("status") in ("completed", "failed", "stopped") for d in docs):
                return
            await asyncio.sleep(1)
        self.problems.append(f"not every task was final {timeout:.0f} s after the faults")

    async def stop_all(self) -> None:
        for agent in self.workers:
            if not await agent.ready(READY_S):
                self.problems.append(f"{agent.name} was not ready at the end")
            code = await agent.stop()
            if code not in (0, None):
                self.problems.append(f"{agent.name} exited with {code} on SIGTERM")
        await self._server.stop(twice=False)

    def leftovers(self) -> list[str]:
        """Processes still running from this soak's directories (tasks, agents, servers)."""
        found = []
        harness = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
            if proc.pid in harness:
                continue
            text = " ".join(proc.info.get("cmdline") or []) + " " + str(proc.info.get("cwd") or "")
            if str(self.root) in text:
                found.append(f"{proc.pid}: {text[:120]}")
        return found

    def tracebacks(self) -> list[str]:
        return [
            path.name
            for path in sorted((self.root / "logs").glob("*.log"))
            if "Traceback" in path.read_text(errors="replace")
        ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _console(api: ApiClient, task_id: str) -> list[str]:
    events = await api.get_task_log(task_id, last=20_000)
    return [line for event in events for line in str(event.get("msg", "")).split("\n")]


async def _verdicts(
    soak: Soak, api: ApiClient, tasks: dict[str, tuple[str, Expected]]
) -> list[TaskVerdict]:
    docs = await api.list_tasks(
        id=list(tasks), only_fields=["id", "status", "status_reason", "status_message", "runtime"]
    )
    out = []
    for doc in sorted(docs, key=lambda d: tasks[str(d["id"])][0]):
        name, expected = tasks[str(doc["id"])]
        trace_path = soak.root / "traces" / name
        trace = trace_path.read_text().splitlines() if trace_path.exists() else []
        console = await _console(api, str(doc["id"]))
        out.append(judge_task(doc, name, expected, console, trace, MAX_RETRIES + 1))
    return out


async def run_soak(
    root: Path,
    *,
    agents: int = 3,
    tasks: int = 60,
    duration: float = 300,
    lines: int = 200,
    seed: int = 1,
    gap: tuple[float, float] = (10, 20),
    final_timeout: float = 600,
) -> dict[str, Any]:
    """Run the soak under ``root``; the verdicts and a summary (``passed`` says it all)."""
    soak = Soak(root, agents, tasks, duration, lines, gap, random.Random(seed))
    soak.make_processes()
    started = time.monotonic()
    soak._server.start()
    api = ApiClient(soak.url, ACCESS_KEY, SECRET_KEY, worker_id="chaos-harness", retry_for=READY_S)
    try:
        enqueued = await soak.enqueue(api)  # retried until the server is up
        for agent in soak.workers:
            agent.start()
        await soak.inject()
        await soak.wait_final(api, list(enqueued), final_timeout)
        verdicts = await _verdicts(soak, api, enqueued)
    finally:
        await soak.stop_all()
        await api.aclose()
    return _report(soak, verdicts, time.monotonic() - started)


def _report(soak: Soak, verdicts: list[TaskVerdict], seconds: float) -> dict[str, Any]:
    left, traces = soak.leftovers(), soak.tracebacks()
    statuses = Counter(v.status for v in verdicts)
    summary: dict[str, Any] = {
        "agents x tasks": f"{soak.agents} x {soak.tasks} ({soak.lines} lines each)",
        "faults": ", ".join(f"{k}: {n}" for k, n in sorted(soak.faults.items())) or "none",
        "wall time": f"{seconds:.0f} s (faults for {soak.duration:.0f} s)",
        "final statuses": ", ".join(f"{k}: {n}" for k, n in sorted(statuses.items())),
        "attempts beyond the first": sum(v.attempts - 1 for v in verdicts),
        "tasks with a problem": sum(not v.ok for v in verdicts),
        "left running": "; ".join(left[:3]) or "nothing",
        "logs with a traceback": ", ".join(traces) or "none",
        "harness problems": "; ".join(soak.problems) or "none",
    }
    passed = not (left or traces or soak.problems) and all(v.ok for v in verdicts)
    summary["verdict"] = "PASSED" if passed else "FAILED"
    return {
        "passed": passed,
        "summary": summary,
        "left_running": left,
        "tasks": [v.__dict__ for v in verdicts],
        "table": markdown(verdicts, summary),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gap", type=float, nargs=2, default=(10.0, 20.0))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run's files here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="conveyor-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(
            run_soak(
                root.resolve(),
                agents=args.agents,
                tasks=args.tasks,
                duration=args.duration,
                lines=args.lines,
                seed=args.seed,
                gap=tuple(args.gap),
            )
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(result["table"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
