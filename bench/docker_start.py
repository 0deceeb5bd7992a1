"""Benchmark: how fast does a task get going in docker mode?

    .venv/bin/python bench/docker_start.py [--tasks 10] [--image conveyor-test-base:latest]

Needs a docker engine (``$DOCKER_HOST``, else ``scripts/docker-engine``'s) holding the image
(``scripts/base-image`` builds the default one offline; nothing is pulled). Against the real
embedded server (in this process) and a real ``conveyor daemon --docker`` (a child process, its
own data and cache dirs), measures enqueue → the script's first statement runs in its container
(the script prints ``time.time()``) and → that line is readable on the server:

  * cold: the first task with a requirements set, on an empty uv cache (resolution and
    downloads from the index, in the container);
  * warm, N tasks each (after one unmeasured warm-up): the image's Python as it is
    (``--run-as-is``), a venv without requirements, a venv with the same requirements set
    (a cached resolution, packages copied from the mounted uv cache).

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pickup import (  # bench/ is this script's directory, first on sys.path
    CONVEYOR,
    DEFAULT_PACKAGES,
    FIRST_LINE,
    Api,
    final_status,
    first_line,
    pct,
    wait_for,
)

from agent.server.embedded import EmbeddedServer

PRIVATE_ENGINE = "unix:///var/lib/conveyor-docker/docker.sock"  # scripts/docker-engine's
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TASK_TIMEOUT = 600.0


def start_agent(server: EmbeddedServer, root: Path, queue: str, image: str) -> Any:
    creds = server.credentials
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))},
        "CONVEYOR_API_HOST": server.url,
        "CONVEYOR_ACCESS_KEY": creds.access_key,
        "CONVEYOR_SECRET_KEY": creds.secret_key,
        "CONVEYOR_DATA_DIR": str(root / "data"),
        "CONVEYOR_CACHE_DIR": str(root / "cache"),
        "CONVEYOR_WORKER_ID": "bench-docker-agent",
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_CONFIG": "",
        "CONVEYOR_DOCKER_PULL": "never",
        "CONVEYOR_DOCKER_HOST": os.environ.get("DOCKER_HOST") or PRIVATE_ENGINE,
    }
    if Path(HOST_CA_BUNDLE).is_file():
        env["CONVEYOR_EXTRA_CA_BUNDLE"] = HOST_CA_BUNDLE
    (root / "data").mkdir(parents=True, exist_ok=True)
    log = (root / "agent.log").open("wb")
    return subprocess.Popen(
        [str(CONVEYOR), "daemon", "--queue", queue, "--docker", image],
        env=env,
        stdout=log,
        stderr=log,
    )


def one_task(api: Api, queue_id: str, script: dict[str, Any], arguments: str) -> tuple[float, ...]:
    """(enqueue → first line runs, enqueue → first line on the server) of one task."""
    task = {"name": "bench", "type": "training", "script": script}
    task_id = api("tasks.create", {**task, "container": {"arguments": arguments}})["id"]
    enqueued = time.time()
    api("tasks.enqueue", {"task": task_id, "queue": queue_id})
    t0 = wait_for(lambda: first_line(api, task_id), TASK_TIMEOUT, "the first line")
    seen = time.time()
    status = wait_for(lambda: final_status(api, task_id), TASK_TIMEOUT, "the task to end")
    if status != "completed":
        raise RuntimeError(f"task {task_id} ended {status}")
    return t0 - enqueued, seen - enqueued


def environment_seconds(log_path: Path) -> list[float]:
    return [
        float(json.loads(line)["seconds"])
        for line in log_path.read_text(errors="replace").splitlines()
        if '"environment.ready"' in line
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--packages", default=DEFAULT_PACKAGES)
    parser.add_argument("--image", default="conveyor-test-base:latest")
    args = parser.parse_args()
    requirements = "\n".join(args.packages.split(","))
    plain = {"diff": FIRST_LINE, "entry_point": "first.py"}
    with_reqs = {**plain, "requirements": {"pip": requirements}}
    modes = [
        ("run as is (the image's python)", plain, "--run-as-is"),
        ("venv, no requirements", plain, ""),
        (f"venv, {len(args.packages.split(','))} packages (warm uv cache)", with_reqs, ""),
    ]
    results: dict[str, list[tuple[float, ...]]] = {}
    with tempfile.TemporaryDirectory(prefix="conveyor-docker-bench-") as tmp:
        root = Path(tmp)
        with EmbeddedServer(root / "server.db") as server:
            api = Api(server)
            queue_id = api("queues.create", {"name": "bench"})["id"]
            agent = start_agent(server, root, "bench", args.image)
            try:
                wait_for(lambda: api("workers.get_all", {})["workers"], 60, "the agent")
                cold = one_task(api, queue_id, with_reqs, "")
                cold_env = environment_seconds(root / "agent.log")[-1]
                for name, script, arguments in modes:
                    one_task(api, queue_id, script, arguments)  # warm-up
                    results[name] = [
                        one_task(api, queue_id, script, arguments) for _ in range(args.tasks)
                    ]
                warm_env = environment_seconds(root / "agent.log")[-1]
            finally:
                agent.send_signal(signal.SIGTERM)
                agent.wait(60)
    print(f"\n| docker task start, {args.image} | first line runs p50 | p90 | on the server p50 |")
    print("|---|---|---|---|")
    print(f"| cold: {len(args.packages.split(','))} packages, empty uv cache | "
          f"{cold[0]:.2f} s | | {cold[1]:.2f} s |")  # fmt: skip
    for name, values in results.items():
        runs, seen = [v[0] for v in values], [v[1] for v in values]
        print(f"| warm ({args.tasks} tasks): {name} | {pct(runs, 0.5):.2f} s | "
              f"{pct(runs, 0.9):.2f} s | {pct(seen, 0.5):.2f} s |")  # fmt: skip
    print("\n| environment stage in the container | seconds |\n|---|---|")
    print(
        f"| cold (empty uv cache) | {cold_env:.2f} |\n| warm (cached resolution) | {warm_env:.2f} |"
    )


if __name__ == "__main__":
    main()
