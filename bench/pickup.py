"""Benchmark: how fast does a task get going, and how fast is its environment built?

    .venv/bin/python bench/pickup.py [--tasks 20] [--packages six,idna,...]

Against the real embedded server (in this process) and a real ``conveyor daemon`` (a child
process, its own data and cache dirs), measures:
  * pickup: ``tasks.enqueue`` → the script's first statement runs (the script prints
    ``time.time()``), and → that line is readable on the server (``events.get_task_log``), over
    N literal-script tasks with warm caches (one unmeasured warm-up task first);
  * environment: the environment stage's own time for a requirements set, cold (empty uv cache)
    then warm (the same set again), read from the agent's ``environment.ready`` log events.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.server.embedded import EmbeddedServer  # noqa: E402

CONVEYOR = ROOT / ".venv" / "bin" / "conveyor"
DEFAULT_PACKAGES = (
    "six,idna,packaging,attrs,certifi,charset-normalizer,urllib3,requests,pyyaml,tqdm"
)
FIRST_LINE = "import time\nprint('T0', repr(time.time()), flush=True)\n"


class Api:
    def __init__(self, server: EmbeddedServer) -> None:
        creds = server.credentials
        self.base = server.url
        token = httpx.get(
            f"{self.base}/auth.login", auth=(creds.access_key, creds.secret_key), timeout=30
        ).json()["data"]["token"]
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def __call__(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        envelope = self.http.post(f"{self.base}/v2.31/{endpoint}", json=body).json()
        if envelope["meta"]["result_code"] != 200:
            raise RuntimeError(f"{endpoint}: {envelope['meta']['result_msg']}")
        data: dict[str, Any] = envelope["data"]
        return data


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise TimeoutError(f"timed out waiting for {what}")


def start_agent(server: EmbeddedServer, root: Path, queue: str) -> subprocess.Popen[bytes]:
    creds = server.credentials
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))},
        "CONVEYOR_API_HOST": server.url,
        "CONVEYOR_ACCESS_KEY": creds.access_key,
        "CONVEYOR_SECRET_KEY": creds.secret_key,
        "CONVEYOR_DATA_DIR": str(root / "data"),
        "CONVEYOR_CACHE_DIR": str(root / "cache"),
        "CONVEYOR_WORKER_ID": "bench-agent",
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_CONFIG": "",
    }
    (root / "data").mkdir(parents=True, exist_ok=True)
    log = (root / "agent.log").open("wb")
    return subprocess.Popen(
        [str(CONVEYOR), "daemon", "--queue", queue], env=env, stdout=log, stderr=log
    )


def run_task(api: Api, queue_id: str, script: dict[str, Any]) -> tuple[str, float]:
    task_id = api("tasks.create", {"name": "bench", "type": "training", "script": script})["id"]
    enqueued = time.time()
    api("tasks.enqueue", {"task": task_id, "queue": queue_id})
    return task_id, enqueued


def final_status(api: Api, task_id: str) -> str | None:
    status = api("tasks.get_by_id", {"task": task_id})["task"]["status"]
    return status if status in ("completed", "failed", "stopped") else None


def first_line(api: Api, task_id: str) -> float | None:
    events = api("events.get_task_log", {"task": task_id, "batch_size": 500, "order": "asc"})
    for event in events["events"]:
        for line in str(event.get("msg", "")).splitlines():
            if line.startswith("T0 "):
                return float(line.split()[1])
    return None


def measure_pickup(api: Api, queue_id: str, n: int) -> tuple[list[float], list[float]]:
    started, visible = [], []
    script = {"diff": FIRST_LINE, "entry_point": "first.py"}
    for i in range(n + 1):
        task_id, enqueued = run_task(api, queue_id, script)
        t0 = wait_for(lambda tid=task_id: first_line(api, tid), 120, "the first line")
        seen = time.time()
        wait_for(lambda tid=task_id: final_status(api, tid), 120, "the task to end")
        if i:  # the first task warms the caches
            started.append(t0 - enqueued)
            visible.append(seen - enqueued)
    return started, visible


def environment_seconds(log_path: Path) -> list[float]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"environment.ready"' in line:
            out.append(float(json.loads(line)["seconds"]))
    return out


def measure_environment(api: Api, queue_id: str, packages: str, log_path: Path) -> list[float]:
    script = {
        "diff": "print('ok')\n",
        "entry_point": "env.py",
        "requirements": {"pip": "\n".join(packages.split(","))},
    }
    before = len(environment_seconds(log_path))
    for _ in range(2):
        task_id, _ = run_task(api, queue_id, script)
        status = wait_for(lambda tid=task_id: final_status(api, tid), 600, "the env task")
        if status != "completed":
            raise RuntimeError(f"environment task {task_id} ended {status}")
    return environment_seconds(log_path)[before:]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--packages", default=DEFAULT_PACKAGES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        root = Path(tmp)
        with EmbeddedServer(root / "server.db") as server:
            api = Api(server)
            queue_id = api("queues.create", {"name": "bench"})["id"]
            agent = start_agent(server, root, "bench")
            try:
                started, visible = measure_pickup(api, queue_id, args.tasks)
                env = measure_environment(api, queue_id, args.packages, root / "agent.log")
            finally:
                agent.send_signal(signal.SIGTERM)
                agent.wait(60)
    n_pkgs = len(args.packages.split(","))
    rows = [
        ("enqueue → first script line runs", started),
        ("enqueue → first line on the server", visible),
    ]
    print(f"\n| measure ({args.tasks} tasks, warm) | p50 | p90 |\n|---|---|---|")
    for name, values in rows:
        print(f"| {name} | {pct(values, 0.5):.3f} s | {pct(values, 0.9):.3f} s |")
    print(f"\n| environment, {n_pkgs} packages | seconds |\n|---|---|")
    print(f"| cold (empty uv cache) | {env[0]:.2f} |\n| warm | {env[1]:.2f} |")
    print(f"\nmean first-line latency {statistics.mean(started):.3f} s")


if __name__ == "__main__":
    main()
