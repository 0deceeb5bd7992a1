"""What an agent costs while it waits: idle RSS and CPU, RSS after one task, start-up imports.

    .venv/bin/python bench/footprint.py [--window 60] [--imports 7] [--venv installed|dev]

Conveyor runs from an installed copy by default (``--venv installed``): this checkout installed
into its own virtualenv (``~/.cache/conveyor-bench/conveyor-venv``, reinstalled every run) with
the runtime dependencies only and its bytecode compiled, as ``pip install conveyor-agent`` and
the Dockerfile make it, and as clearml-agent's virtualenv is made. ``--venv dev`` runs the
development ``.venv`` instead: its dev extras change what the libraries import (selenium brings
trio, which httpcore imports when present: ~3 MB), and where ``PYTHONDONTWRITEBYTECODE`` is set
and the installer compiled nothing, every start compiles every module from source (~5 MB more).

Three agents, one after the other, each with its own directories:
  conveyor (agent only)  ``conveyor daemon`` against a separate control plane (this process's)
  conveyor (default)     ``conveyor daemon`` with its own embedded control plane in-process
  clearml-agent 3.0.3    ``clearml-agent daemon --foreground`` against the same server as the
                         first (installed once by bench/compare into its own virtualenv)

Each agent registers, settles 10 s, then for ``--window`` seconds its process tree is sampled
every second (RSS averaged; CPU is user + system time over the window). One small task (a
literal script) then runs on it and, once the task is final and the agent idle again, the tree's
RSS is taken once more. Import time: a fresh interpreter imports what the agent's daemon
command imports before serving (``agent.cli`` + ``agent.worker.service``, and by default
``agent.server.embedded``; for clearml-agent, ``clearml_agent.commands.worker``); the median of
``--imports`` runs, wall and CPU seconds.
Prints a markdown table (kept in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from agent.server.embedded import EmbeddedServer  # noqa: E402
from agent.server.state import Credentials  # noqa: E402
from bench.compare import tasks as t  # noqa: E402
from bench.compare.agents import (  # noqa: E402
    CACHE_ROOT,
    CLEARML_VENV,
    CONVEYOR,
    TASK_PYTHON,
    VENV_TIMEOUT,
    ClearmlAgent,
    Conveyor,
    Running,
    clean_environ,
    ensure_clearml_agent,
)
from bench.compare.server import Api  # noqa: E402

INSTALLED_VENV = CACHE_ROOT / "conveyor-venv"
SETTLE = 10.0
TASK_TIMEOUT = 300.0
START_TIMEOUT = 60.0
CONVEYOR_IMPORTS = "import agent.cli, agent.worker.service"
EMBEDDED_IMPORTS = CONVEYOR_IMPORTS + ", agent.server.embedded"
CLEARML_IMPORTS = "import clearml_agent.commands.worker"
TIMER = (
    "import resource, time; t = time.perf_counter(); {imports}; "
    "u = resource.getrusage(resource.RUSAGE_SELF); "
    "print(time.perf_counter() - t, u.ru_utime + u.ru_stime)"
)


@dataclass(frozen=True)
class Endpoint:
    """What ``Api`` needs of a server: its URL and credentials (here: another process's)."""

    url: str
    credentials: Credentials


@dataclass
class Row:
    agent: str
    idle_rss_mb: float
    idle_cpu_percent: float
    rss_after_task_mb: float
    import_s: float
    import_cpu_s: float


def tree_rss_mb(running: Running) -> float:
    total = 0
    for proc in running.tree():
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def tree_cpu_s(running: Running) -> dict[int, float]:
    out: dict[int, float] = {}
    for proc in running.tree():
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[proc.pid] = times.user + times.system
    return out


def idle(running: Running, window: float) -> tuple[float, float]:
    """(mean RSS MB, CPU %) of the agent's tree over ``window`` seconds, after settling."""
    time.sleep(SETTLE)
    before = tree_cpu_s(running)
    start = time.monotonic()
    samples: list[float] = []
    while time.monotonic() - start < window:
        samples.append(tree_rss_mb(running))
        time.sleep(1.0)
    used = sum(cpu - before.get(pid, 0.0) for pid, cpu in tree_cpu_s(running).items())
    return statistics.fmean(samples), 100 * used / (time.monotonic() - start)


def after_one_task(running: Running, api: Api, queue_id: str) -> float:
    """Run one literal-script task on the agent; its tree's RSS once it is idle again."""
    body = t.script(t.FIRST_LINE + "print('footprint task done')\n", "footprint.py")
    task = t.submit(api, queue_id, "footprint", body)
    doc = t.wait_final(api, task.task_id, TASK_TIMEOUT)
    if doc.get("status") != "completed":
        raise RuntimeError(f"footprint task ended {doc}: {t.describe_failure(api, task.task_id)}")
    time.sleep(2.0)  # the slot's side loops wind down
    return tree_rss_mb(running)


def import_seconds(python: Path, imports: str, runs: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``imports`` in a fresh interpreter (run outside the
    checkout, so that an installed copy imports itself, not the checkout's ``agent``)."""
    walls, cpus = [], []
    for _ in range(runs):
        done = subprocess.run(
            [str(python), "-c", TIMER.format(imports=imports)],
            capture_output=True, text=True, timeout=120, check=True, cwd=python.anchor,
        )  # fmt: skip
        wall, cpu = done.stdout.split()
        walls.append(float(wall))
        cpus.append(float(cpu))
    return statistics.median(walls), statistics.median(cpus)


def install_conveyor(venv: Path = INSTALLED_VENV) -> Path:
    """This checkout installed into ``venv`` (runtime dependencies only, bytecode compiled, as
    pip installs it); its ``conveyor`` executable."""
    python = venv / "bin" / "python"
    uv = ROOT / ".venv" / "bin" / "uv"
    steps = [] if python.exists() else [[sys.executable, "-m", "venv", "--without-pip", str(venv)]]
    steps.append(
        [str(uv), "pip", "install", "--quiet", "--python", str(python), "--compile-bytecode",
         "--reinstall-package", "conveyor-agent", str(ROOT)]
    )  # fmt: skip
    for step in steps:
        subprocess.run(step, capture_output=True, text=True, timeout=VENV_TIMEOUT, check=True)
    return venv / "bin" / "conveyor"


def start_default_conveyor(home: Path, queue: str, executable: Path) -> tuple[Running, Api]:
    """``conveyor daemon`` with its own embedded server; waits for its worker to register."""
    home.mkdir(parents=True, exist_ok=True)
    data = home / "data"
    env = clean_environ(home)
    env.update(
        CONVEYOR_DATA_DIR=str(data), CONVEYOR_CACHE_DIR=str(home / "cache"),
        CONVEYOR_WORKER_ID="bench-default", CONVEYOR_LOG_FORMAT="json", CONVEYOR_CONFIG="",
        CONVEYOR_PYTHON=str(TASK_PYTHON), CONVEYOR_EMBEDDED_PORT="0",
    )  # fmt: skip
    log_path = home / "agent.log"
    with log_path.open("ab") as log:
        argv = [str(executable), "daemon", "--queue", queue]
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    running = Running("conveyor (default)", "bench-default", proc, log_path, home)
    state = t.wait_for(lambda: _read_state(data / "server.json"), START_TIMEOUT, "server.json")
    api = Api(Endpoint(state["api_host"], Credentials(state["access_key"], state["secret_key"])))
    t.wait_for(
        lambda: any(w.get("id") == "bench-default" for w in api("workers.get_all", {})["workers"]),
        START_TIMEOUT,
        "the default conveyor to register",
    )
    return running, api


def _read_state(path: Path) -> dict[str, str] | None:
    try:
        state: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def measure(
    name: str, start: Callable[[], tuple[Running, Api, str]], window: float
) -> tuple[float, float, float]:
    running, api, queue_id = start()
    try:
        rss, cpu = idle(running, window)
        return rss, cpu, after_one_task(running, api, queue_id)
    finally:
        running.stop((15, 15))
        print(f"== {name}: done", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0, help="idle window (s)")
    parser.add_argument("--imports", type=int, default=7, help="import timings per agent")
    parser.add_argument("--venv", choices=["installed", "dev"], default="installed",
                        help="conveyor from an installed copy (default) or from .venv")  # fmt: skip
    args = parser.parse_args()
    clearml = ensure_clearml_agent()
    print("clearml-agent:", clearml, file=sys.stderr)
    conveyor = install_conveyor() if args.venv == "installed" else CONVEYOR
    print("conveyor:", conveyor, file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="conveyor-footprint-"))
    python = conveyor.parent / "python"
    rows: list[Row] = []
    with EmbeddedServer(work / "server.db", port=0) as server:
        api = Api(server)

        def on_server(kind: Conveyor | ClearmlAgent) -> Callable[[], tuple[Running, Api, str]]:
            def start() -> tuple[Running, Api, str]:
                queue = f"fp-{kind.name}"
                queue_id = str(api("queues.create", {"name": queue})["id"])
                return kind.start(server, work / kind.name, queue), api, queue_id

            return start

        def default() -> tuple[Running, Api, str]:
            # its own server has only the default queue, which it serves
            running, own = start_default_conveyor(work / "default", "default", conveyor)
            queues = own("queues.get_all", {"name": "^default$"})["queues"]
            return running, own, str(queues[0]["id"])

        agents: list[tuple[str, Callable[[], tuple[Running, Api, str]], Path, str]] = [
            ("conveyor (agent only)", on_server(Conveyor(executable=conveyor)), python,
             CONVEYOR_IMPORTS),
            ("conveyor (default: embedded server)", default, python, EMBEDDED_IMPORTS),
            ("clearml-agent 3.0.3", on_server(ClearmlAgent()), CLEARML_VENV / "bin" / "python",
             CLEARML_IMPORTS),
        ]  # fmt: skip
        for name, start, interpreter, imports in agents:
            rss, cpu, after = measure(name, start, args.window)
            wall, cpu_s = import_seconds(interpreter, imports, args.imports)
            rows.append(Row(name, rss, cpu, after, wall, cpu_s))
    print(table(rows, args.window))
    print(f"conveyor: {args.venv} ({conveyor})")


def table(rows: list[Row], window: float) -> str:
    head = (
        f"| agent | idle RSS (MB, {window:.0f} s) | idle CPU (%) | RSS after one task (MB) "
        "| daemon imports (s, wall) | daemon imports (s, CPU) |\n|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r.agent} | {r.idle_rss_mb:.1f} | {r.idle_cpu_percent:.2f} | "
        f"{r.rss_after_task_mb:.1f} | {r.import_s:.3f} | {r.import_cpu_s:.3f} |"
        for r in rows
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return "\n".join([head, *lines, "", f"load average at the end: {load}"])


if __name__ == "__main__":
    main()
