"""Load: many agent processes, one embedded server, every task run exactly once.

    .venv/bin/python bench/load.py --agents 20 --tasks 1000 [--slots 1] [--json out.json]

Starts one embedded control plane in this process (its ASGI app wrapped in a timer that
measures every request server-side, from arrival to the last byte of the answer), enqueues
``--tasks`` trivial literal-script tasks on one queue, then starts ``--agents`` real
``conveyor daemon`` processes (``--slots`` each, own data directory, one shared cache). Each
task appends its id to one shared file with ``O_APPEND`` (one ``write(2)``: lines never
interleave). The harness does not poll: it watches the final-status calls go through the
timer. When every task is final (or ``--timeout`` passes) the agents are stopped and the run is
judged:

- every task ``completed``; none lost (still queued / in progress), none failed;
- exactly once: each id appears once in the shared file (no duplicate run, no missing run);
- server side: each task popped by one ``queues.get_next_task`` and started by one
  ``tasks.started`` (the worker that popped it);
- latency of ``queues.get_next_task`` on the server: p50/p99/max, over all calls and over
  the calls that handed out a task; throughput (tasks/s from the first ``tasks.started`` to
  the last final status, as the server saw them).

Prints a markdown summary; ``--json`` writes the numbers. Exit status 0 when the run passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from agent.server import embedded  # noqa: E402
from agent.server.embedded import EmbeddedServer  # noqa: E402

CONVEYOR = ROOT / ".venv" / "bin" / "conveyor"
QUEUE = "load"
FINAL = frozenset({"completed", "failed", "stopped"})
READY_TIMEOUT = 300.0  # many agents starting at once on few cores
STOP_TIMEOUT = 60.0
POLL_S = 0.5
CLAIM = "queues.get_next_task"
STARTED = "tasks.started"
ENDED = frozenset({"tasks.completed", "tasks.failed", "tasks.stopped"})
TRACKED = frozenset({CLAIM, STARTED, *ENDED})
TASK_SCRIPT = """\
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (os.environ["CLEARML_TASK_ID"] + "\\n").encode())
os.close(fd)
"""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- the server side: every request timed, claims and starts attributed ------------------------
@dataclass(frozen=True)
class Timed:
    endpoint: str
    seconds: float  # arrival → last byte of the answer, measured in the server
    worker: str  # X-ClearML-Worker
    task: str  # the task popped (get_next_task) or whose status changed; "" otherwise
    at: float = 0.0  # arrival (time.monotonic())


@dataclass
class RequestTimer:
    """ASGI middleware around the embedded app (request bodies of interest kept, small)."""

    app: App | None = None
    timed: list[Timed] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        started = time.perf_counter()
        endpoint = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope["headers"]}
        keep = endpoint in TRACKED
        request, response = bytearray(), bytearray()

        async def recv() -> Message:
            message = await receive()
            if keep and message["type"] == "http.request":
                request.extend(message.get("body", b""))
            return message

        async def snd(message: Message) -> None:
            if keep and message["type"] == "http.response.body":
                response.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, recv, snd)
        seconds = time.perf_counter() - started
        task = _task_of(endpoint, bytes(request), bytes(response)) if keep else ""
        with self.lock:
            self.timed.append(
                Timed(endpoint, seconds, headers.get("x-clearml-worker", ""), task, arrived)
            )

    def snapshot(self) -> list[Timed]:
        with self.lock:
            return list(self.timed)


def _task_of(endpoint: str, request: bytes, response: bytes) -> str:
    try:
        if endpoint == CLAIM:
            entry = json.loads(response).get("data", {}).get("entry") or {}
            return str(entry.get("task") or "")
        return str(json.loads(request or b"{}").get("task") or "")
    except (ValueError, AttributeError):
        return ""


class TimedServer(EmbeddedServer):
    """The embedded server with its app wrapped in a :class:`RequestTimer`."""

    def __init__(self, db_path: Path, **kwargs: Any) -> None:
        super().__init__(db_path, **kwargs)
        self.timer = RequestTimer()

    def start(self) -> None:
        original = embedded.create_app

        def wrapped(*args: Any, **kwargs: Any) -> App:
            self.timer.app = original(*args, **kwargs)
            return self.timer

        embedded.create_app = wrapped  # type: ignore[assignment]
        try:
            super().start()
        finally:
            embedded.create_app = original


class Api:
    """The harness's own client (its requests are timed too, but never claim or start)."""

    def __init__(self, server: EmbeddedServer) -> None:
        creds = server.credentials
        self.base = server.url
        self.http = httpx.Client(timeout=120)
        token = self.http.get(
            f"{self.base}/auth.login", auth=(creds.access_key, creds.secret_key)
        ).json()["data"]["token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        envelope = self.http.post(f"{self.base}/{endpoint}", json=body).json()
        if envelope["meta"]["result_code"] != 200:
            raise RuntimeError(f"{endpoint}: {envelope['meta']['result_msg']}")
        data: dict[str, Any] = envelope["data"]
        return data

    def close(self) -> None:
        self.http.close()


# --- the agents --------------------------------------------------------------------------------
@dataclass
class AgentProcess:
    worker: str
    process: subprocess.Popen[bytes]
    log: Path


def agent_environ(
    server: EmbeddedServer, data_dir: Path, cache: Path, worker: str
) -> dict[str, str]:
    creds = server.credentials
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))}
    env.update(
        CONVEYOR_API_HOST=server.url,
        CONVEYOR_ACCESS_KEY=creds.access_key,
        CONVEYOR_SECRET_KEY=creds.secret_key,
        CONVEYOR_DATA_DIR=str(data_dir),
        CONVEYOR_CACHE_DIR=str(cache),
        CONVEYOR_WORKER_ID=worker,
        CONVEYOR_LOG_FORMAT="json",
        CONVEYOR_CONFIG="",
    )
    return env


def start_agents(server: EmbeddedServer, root: Path, count: int, slots: int) -> list[AgentProcess]:
    cache = root / "cache"
    agents = []
    for n in range(count):
        data_dir = root / f"agent-{n:02d}"
        data_dir.mkdir(parents=True)
        log = data_dir / "agent.log"
        worker = f"load-{n:02d}"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(CONVEYOR), "daemon", "--queue", QUEUE, "--slots", str(slots)],
                env=agent_environ(server, data_dir, cache, worker),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        agents.append(AgentProcess(worker, process, log))
    deadline = time.monotonic() + READY_TIMEOUT
    for agent in agents:
        while '"agent ready"' not in agent.log.read_text(errors="replace"):
            if agent.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent {agent.worker} did not start:\n{agent.log.read_text()}")
            time.sleep(0.1)  # a log file has no event to await
    return agents


def stop_agents(agents: list[AgentProcess]) -> dict[str, int | None]:
    """SIGTERM each (it drains: nothing is running any more), then wait; exit codes."""
    for agent in agents:
        if agent.process.poll() is None:
            agent.process.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for agent in agents:
        try:
            codes[agent.worker] = agent.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait(10)
            codes[agent.worker] = None
    return codes


# --- the run -----------------------------------------------------------------------------------
@dataclass
class Result:
    agents: int
    slots: int
    tasks: int
    seconds_enqueue: float  # create + enqueue every task (before any agent runs)
    seconds_to_start_agents: float  # the first agent started → the last one ready
    seconds_running: float  # first tasks.started → last final status (server side)
    tasks_per_second: float  # over seconds_running
    statuses: dict[str, int]
    not_final: int  # lost: still queued or in progress at the end
    ran_never: int  # ids missing from the shared file
    ran_twice: int  # ids in the shared file more than once
    popped_never: int  # tasks no get_next_task handed out (yet they ran?)
    popped_twice: int  # tasks handed out by more than one get_next_task
    started_never: int
    started_twice: int  # tasks with more than one tasks.started
    started_by_other: int  # started by a worker other than the one that popped it
    agent_exit_codes: dict[str, int | None]
    claim_calls: int
    claim_ms: dict[str, float]  # every get_next_task: p50, p99, max
    claim_hit_ms: dict[str, float]  # the ones that handed out a task
    started_ms: dict[str, float]
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            self.statuses.get("completed", 0) == self.tasks
            and self.not_final == 0
            and self.ran_never == 0
            and self.ran_twice == 0
            and self.popped_never == 0
            and self.popped_twice == 0
            and self.started_never == 0
            and self.started_twice == 0
            and self.started_by_other == 0
            and all(code == 0 for code in self.agent_exit_codes.values())
        )


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    ms = sorted(s * 1000 for s in seconds)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    return {"p50": statistics.median(ms), "p99": p99, "max": ms[-1]}


def enqueue_all(api: Api, queue_id: str, count: int, ids_file: Path) -> list[str]:
    script = {"diff": TASK_SCRIPT, "entry_point": f"record.py {ids_file}"}
    ids = []
    for n in range(count):
        task_id = str(
            api("tasks.create", {"name": f"load {n}", "type": "training", "script": script})["id"]
        )
        api("tasks.enqueue", {"task": task_id, "queue": queue_id})
        ids.append(task_id)
    return ids


def wait_all_ended(timer: RequestTimer, ids: list[str], timeout: float) -> None:
    """Until every task had a final status call (seen by the timer: no polling load)."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = {t.task for t in timer.snapshot() if t.endpoint in ENDED}
        if wanted <= ended:
            return
        time.sleep(POLL_S)


def statuses_of(api: Api, ids: list[str]) -> dict[str, str]:
    docs = api("tasks.get_all", {"id": ids, "only_fields": ["id", "status"]})["tasks"]
    return {str(d["id"]): str(d["status"]) for d in docs}


def running_window(timed: list[Timed]) -> float:
    """First tasks.started → last final status call, as the server received them."""
    starts = [t.at for t in timed if t.endpoint == STARTED and t.task]
    ends = [t.at for t in timed if t.endpoint in ENDED and t.task]
    return max(ends) - min(starts) if starts and ends else 0.0


def judge(
    timed: list[Timed], ids: list[str], statuses: dict[str, str], ids_file: Path
) -> dict[str, Any]:
    """The verdict's numbers (pure but for reading the shared file)."""
    ran = Counter(ids_file.read_text().split()) if ids_file.exists() else Counter()
    claims = [t for t in timed if t.endpoint == CLAIM]
    popped: dict[str, list[str]] = {}
    started: dict[str, list[str]] = {}
    for t in timed:
        if t.task and t.endpoint == CLAIM:
            popped.setdefault(t.task, []).append(t.worker)
        elif t.task and t.endpoint == STARTED:
            started.setdefault(t.task, []).append(t.worker)
    wanted = set(ids)
    return {
        "statuses": dict(Counter(statuses.values())),
        "not_final": sum(1 for i in ids if statuses.get(i) not in FINAL),
        "ran_never": sum(1 for i in ids if ran[i] == 0),
        "ran_twice": sum(1 for i in ids if ran[i] > 1),
        "popped_never": sum(1 for t in wanted if t not in popped),
        "popped_twice": sum(1 for t, w in popped.items() if t in wanted and len(w) > 1),
        "started_never": sum(1 for t in wanted if t not in started),
        "started_twice": sum(1 for t, w in started.items() if t in wanted and len(w) > 1),
        "started_by_other": sum(
            1 for t in wanted if t in started and t in popped and started[t][0] != popped[t][0]
        ),
        "claim_calls": len(claims),
        "claim_ms": percentiles([t.seconds for t in claims]),
        "claim_hit_ms": percentiles([t.seconds for t in claims if t.task]),
        "started_ms": percentiles([t.seconds for t in timed if t.endpoint == STARTED]),
    }


def run_load(
    agents: int, tasks: int, *, slots: int = 1, timeout: float = 3600.0, root: Path | None = None
) -> Result:
    """One load run in a scratch directory (``root``, else a temporary one, removed after)."""
    scratch = root or Path(tempfile.mkdtemp(prefix="conveyor-load-"))
    try:
        with TimedServer(scratch / "server.db") as server:
            api = Api(server)
            try:
                queue_id = str(api("queues.create", {"name": QUEUE})["id"])
                ids_file = scratch / "ran.txt"
                began = time.monotonic()
                ids = enqueue_all(api, queue_id, tasks, ids_file)
                enqueued = time.monotonic() - began
                began = time.monotonic()
                procs = start_agents(server, scratch, agents, slots)
                agents_up = time.monotonic() - began
                try:
                    wait_all_ended(server.timer, ids, timeout)
                finally:
                    codes = stop_agents(procs)
                statuses = statuses_of(api, ids)
                timed = server.timer.snapshot()
                verdict = judge(timed, ids, statuses, ids_file)
            finally:
                api.close()
        return Result(
            agents=agents,
            slots=slots,
            tasks=tasks,
            seconds_enqueue=enqueued,
            seconds_to_start_agents=agents_up,
            seconds_running=running_window(timed),
            tasks_per_second=tasks / running_window(timed) if running_window(timed) else 0.0,
            agent_exit_codes=codes,
            machine={
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "load_average_at_end": list(os.getloadavg()),
            },
            **verdict,
        )
    finally:
        if root is None:
            shutil.rmtree(scratch, ignore_errors=True)


def markdown(result: Result) -> str:
    c, h, s = result.claim_ms, result.claim_hit_ms, result.started_ms
    rows = [
        ("agents x slots", f"{result.agents} x {result.slots}"),
        ("tasks", f"{result.tasks:,}"),
        ("completed", f"{result.statuses.get('completed', 0):,}"),
        ("lost (not final) / failed", f"{result.not_final} / {result.statuses.get('failed', 0)}"),
        ("ran never / twice", f"{result.ran_never} / {result.ran_twice}"),
        ("popped never / twice", f"{result.popped_never} / {result.popped_twice}"),
        ("started never / twice", f"{result.started_never} / {result.started_twice}"),
        ("enqueue all tasks (s)", f"{result.seconds_enqueue:.1f}"),
        ("all agents up (s)", f"{result.seconds_to_start_agents:.1f}"),
        ("first start → last final status (s)", f"{result.seconds_running:.1f}"),
        ("throughput (tasks/s)", f"{result.tasks_per_second:.2f}"),
        ("get_next_task calls", f"{result.claim_calls:,}"),
        ("get_next_task p50 / p99 / max (ms)", f"{c['p50']:.2f} / {c['p99']:.2f} / {c['max']:.1f}"),
        ("… that handed out a task (ms)", f"{h['p50']:.2f} / {h['p99']:.2f} / {h['max']:.1f}"),
        ("tasks.started p50 / p99 / max (ms)", f"{s['p50']:.2f} / {s['p99']:.2f} / {s['max']:.1f}"),
        ("verdict", "PASS" if result.passed else "FAIL"),
    ]
    return "\n".join(["| measure | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0, help="for all tasks to finish")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (logs)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
    result = run_load(
        args.agents, args.tasks, slots=args.slots, timeout=args.timeout, root=args.keep
    )
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps({**asdict(result), "passed": result.passed}, indent=1))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
