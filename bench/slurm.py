"""Benchmark: the Slurm glue beside the plain daemon, on the single-node test cluster.

    SLURM_CONF=... .venv/bin/python bench/slurm.py [--tasks 10] [--many 50] [--minutes 1]

Against the real embedded server (in this process), a real ``conveyor slurm`` and a real
``conveyor daemon`` (child processes, their own dirs), measures:
  * pickup: ``tasks.enqueue`` → the script's first statement runs, and → that line is readable
    on the server, over N literal-script tasks run one at a time (one unmeasured warm-up);
  * load: Slurm commands the glue runs per minute with 1 and with ``--many`` jobs in flight
    (sleeping tasks), from the counts it logs when it stops.
Prints markdown tables. Needs a running Slurm (scripts/slurm-cluster start).
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
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.server.embedded import EmbeddedServer  # noqa: E402
from bench.pickup import CONVEYOR, Api, measure_pickup, pct, start_agent, wait_for  # noqa: E402

PREFIX = f"cvb{uuid.uuid4().hex[:6]}-"


def start_glue(
    server: EmbeddedServer, root: Path, queue: str, poll: float
) -> subprocess.Popen[bytes]:
    creds = server.credentials
    job_env = f"CONVEYOR_DATA_DIR={root / 'job-data'},CONVEYOR_CACHE_DIR={root / 'cache'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))},
        "CONVEYOR_API_HOST": server.url,
        "CONVEYOR_ACCESS_KEY": creds.access_key,
        "CONVEYOR_SECRET_KEY": creds.secret_key,
        "CONVEYOR_DATA_DIR": str(root / "glue-data"),
        "CONVEYOR_WORKER_ID": f"bench-glue-{queue}",
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_CONFIG": "",
        "CONVEYOR_SLURM_POLL_INTERVAL": str(poll),
        "CONVEYOR_SLURM_MAX_JOBS": "1000",
        "CONVEYOR_SLURM_JOB_PREFIX": PREFIX,  # the same for a restarted glue: it adopts
        "CONVEYOR_SLURM_SHARED_DIR": str(root / "shared"),
        "CONVEYOR_SLURM_CONVEYOR": str(CONVEYOR),
        "CONVEYOR_SLURM_JOB_ENV": job_env,
    }
    log = (root / f"glue-{queue}.log").open("ab")
    return subprocess.Popen(
        [str(CONVEYOR), "slurm", "--queue", queue], env=env, stdout=log, stderr=log
    )


def cancel_jobs() -> None:
    """scancel what this run left in Slurm (its glue is gone: nobody else will)."""
    names = subprocess.run(
        ["squeue", "--noheader", "--format=%i %j"], check=True, capture_output=True, text=True
    ).stdout.split("\n")
    ids = [line.split()[0] for line in names if line.strip().split(" ")[-1].startswith(PREFIX)]
    if ids:
        subprocess.run(["scancel", *ids], check=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def slurm_calls(log_path: Path) -> tuple[int, dict[str, int]]:
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if '"slurm glue stopped"' in line:
            event = json.loads(line)
            return int(event["polls"]), dict(event["slurm_calls"])
    raise RuntimeError(f"no stop event in {log_path}")


def calls_per_minute(
    server: EmbeddedServer, api: Api, root: Path, jobs: int, minutes: float
) -> tuple[int, dict[str, float]]:
    queue = f"load{jobs}"
    queue_id = api("queues.create", {"name": queue})["id"]
    sleeper = {"diff": "import time\ntime.sleep(3600)\n", "entry_point": "sleep.py"}
    tasks = []
    for _ in range(jobs):
        task_id = api("tasks.create", {"name": "sleep", "type": "training", "script": sleeper})[
            "id"
        ]
        api("tasks.enqueue", {"task": task_id, "queue": queue_id})
        tasks.append(task_id)
    glue = start_glue(server, root, queue, 5.0)
    wait_for(lambda: all(
        api("tasks.get_by_id", {"task": t})["task"]["status"] == "in_progress" for t in tasks
    ), 300, "all jobs submitted")  # fmt: skip
    stop(glue)
    # A fresh glue counts the steady state: it adopts the jobs in flight, submits nothing.
    glue = start_glue(server, root, queue, 5.0)
    started = time.monotonic()
    time.sleep(minutes * 60)
    stop(glue)
    elapsed = (time.monotonic() - started) / 60
    polls, calls = slurm_calls(root / f"glue-{queue}.log")
    for task_id in tasks:
        api("tasks.stop", {"task": task_id})
    cancel_jobs()
    return polls, {k: v / elapsed for k, v in calls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--many", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--only", choices=("pickup", "load"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        root = Path(tmp)
        with EmbeddedServer(root / "server.db", port=0) as server:
            api = Api(server)
            rows: list[tuple[str, list[float], list[float]]] = []
            kinds = (
                () if args.only == "load" else ("daemon", "slurm (poll 5 s)", "slurm (poll 1 s)")
            )
            for kind in kinds:
                queue = f"q{len(rows)}"
                queue_id = api("queues.create", {"name": queue})["id"]
                if kind == "daemon":
                    process = start_agent(server, root / "agent", queue)
                else:
                    process = start_glue(server, root, queue, 5.0 if "5 s" in kind else 1.0)
                try:
                    started, visible = measure_pickup(api, queue_id, args.tasks)
                finally:
                    stop(process)
                rows.append((kind, started, visible))
            print("| runner | enqueue → first statement p50 / p90 | → line on server p50 |")
            print("|---|---|---|")
            for kind, started, visible in rows:
                print(f"| {kind} | {statistics.median(started):.2f} / {pct(started, 0.9):.2f} s "
                      f"| {statistics.median(visible):.2f} s |")  # fmt: skip
            print("\n| jobs in flight | polls | Slurm calls per minute |")
            print("|---|---|---|")
            for jobs in () if args.only == "pickup" else (1, args.many):
                polls, rate = calls_per_minute(server, api, root, jobs, args.minutes)
                shown = ", ".join(f"{k} {v:.1f}" for k, v in sorted(rate.items()))
                print(f"| {jobs} | {polls} | {shown} |")


if __name__ == "__main__":
    main()
