"""Benchmark: SDK workflows end to end on Conveyor (a 3-step pipeline, an HPO of 8 jobs).

    .venv/bin/python bench/sdk_workflows.py [--runs 3] [--only pipeline3,hpo8]
                                            [--agent conveyor|clearml-agent]

One embedded server in this process and real agents: Conveyor's `default` agent with two slots
and `services` agent in services mode (as tests/sdk runs them), or clearml-agent 3.0.3 (the
compare harness's install, bench/compare/agents.py): two daemons on `default` (one task each)
and one on `services` with `--services-mode`. Scenarios:

  pipeline3  PipelineController from functions, 3 steps (make → square → total), controller
             sent to `services` by `pipe.start()`, steps on `default`: the local script's start
             → the controller's `completed` at the server
  hpo8       HyperParameterOptimizer (GridSearch, 8 jobs, concurrency 2) run as a local script
             cloning a base task onto `default`: the script's start → its end (all 8 completed)

Prints a markdown table (median, min, max) and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.server.embedded import EmbeddedServer  # noqa: E402
from bench.compare.agents import ClearmlAgent  # noqa: E402
from tests.helpers import api_call, result_of, run_sdk, sdk_env  # noqa: E402
from tests.integration.daemon.support import wait_final  # noqa: E402
from tests.sdk.support import PRELUDE, start_agent  # noqa: E402

PIPELINE = """
from clearml import PipelineController

def make(n):
    return list(range(int(n)))

def square(data):
    return [x * x for x in data]

def total(data):
    return sum(data)

pipe = PipelineController(name="bench-pipeline", project="bench/sdk", version="1.0",
                          add_pipeline_tags=False)
pipe.set_default_execution_queue("default")
pipe.add_parameter("n", 5)
pipe.add_function_step(name="make", function=make, function_kwargs=dict(n="${pipeline.n}"),
                       function_return=["data"], cache_executed_step=False)
pipe.add_function_step(name="square", function=square,
                       function_kwargs=dict(data="${make.data}"),
                       function_return=["data"], cache_executed_step=False)
pipe.add_function_step(name="total", function=total,
                       function_kwargs=dict(data="${square.data}"),
                       function_return=["total"], cache_executed_step=False)
pipe.start(queue="services")  # the local process ends here: the controller goes remote
"""

BASE = """
from clearml import Task
task = Task.init(project_name="bench/sdk", task_name="objective")
params = task.connect({"x": 1, "y": 1})
task.get_logger().report_scalar("score", "score", value=int(params["x"]) * 10 + int(params["y"]),
                                iteration=0)
task.close()
emit(task.id)
"""

HPO = """
from clearml import Task
from clearml.automation import DiscreteParameterRange, GridSearch, HyperParameterOptimizer
task = Task.init(project_name="bench/sdk", task_name="optimizer",
                 task_type=Task.TaskTypes.optimizer, reuse_last_task_id=False)
optimizer = HyperParameterOptimizer(
    base_task_id="{base}",
    hyper_parameters=[DiscreteParameterRange("General/x", values=[1, 2]),
                      DiscreteParameterRange("General/y", values=[1, 2, 3, 4])],
    objective_metric_title="score", objective_metric_series="score",
    objective_metric_sign="max", max_number_of_concurrent_tasks=2,
    optimizer_class=GridSearch, execution_queue="default", total_max_jobs=8,
    pool_period_min=0.02, save_top_k_tasks_only=None,
)
optimizer.set_report_period(0.05)
optimizer.start()
optimizer.wait()
top = optimizer.get_top_experiments(top_k=1)
optimizer.stop()
emit({{"optimizer": task.id, "best": top[0].get_last_scalar_metrics()["score"]["score"]["last"]}})
"""


def script(env: dict[str, str], code: str, timeout: float) -> Any:
    proc = run_sdk(PRELUDE + code, env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"script failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return result_of(proc)


def pipeline3(server: EmbeddedServer, env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = run_sdk(PIPELINE, env, timeout=300)
    marker = "created new task id="
    ids = [line.split(marker)[1].split()[0] for line in proc.stdout.splitlines() if marker in line]
    if proc.returncode != 0 or not ids:
        raise RuntimeError(f"pipeline script ({proc.returncode}):\n{proc.stderr[-3000:]}")
    controller = ids[0]
    doc = wait_final(server, controller, timeout=600)
    seconds = time.monotonic() - started
    if doc["status"] != "completed":
        raise RuntimeError(f"pipeline {controller}: {doc['status']} {doc.get('status_reason')}")
    steps = api_call(server, "tasks.get_all", {"parent": controller, "only_fields": ["status"]})
    if [t["status"] for t in steps["tasks"]] != ["completed"] * 3:
        raise RuntimeError(f"pipeline {controller}: steps {steps['tasks']}")
    return seconds


def hpo8(server: EmbeddedServer, env: dict[str, str], base: str) -> float:
    started = time.monotonic()
    out = script(env, HPO.format(base=base), 900)
    seconds = time.monotonic() - started
    clones = api_call(
        server, "tasks.get_all", {"parent": out["optimizer"], "only_fields": ["status"]}
    )["tasks"]
    done = [t for t in clones if t["status"] == "completed"]
    if out["best"] != 24 or len(done) != 8:
        raise RuntimeError(f"hpo: best {out['best']}, {len(done)} clones completed of {clones}")
    return seconds


def start_agents(kind: str, server: EmbeddedServer, root: Path) -> list[Callable[[], None]]:
    """The agents serving `default` (two tasks at once) and `services`; their stop functions."""
    if kind == "conveyor":
        default = start_agent(server, root, root / "cache", "default", "--slots", "2")
        services = start_agent(
            server, root, root / "cache", "services", "--services-mode", "4", "--create-queue"
        )
        return [default.stop, services.stop]
    names = {q["name"] for q in api_call(server, "queues.get_all", {})["queues"]}
    for queue in {"default", "services"} - names:
        api_call(server, "queues.create", {"name": queue})
    stops: list[Callable[[], None]] = []
    for worker, queue, extra in (
        ("bench-clearml-d1", "default", ()),
        ("bench-clearml-d2", "default", ()),
        ("bench-clearml-svc", "services", ("--services-mode",)),
    ):
        agent = ClearmlAgent(worker_id=worker, extra_args=extra)
        running = agent.start(server, root / worker, queue)
        stops.append(lambda r=running, a=agent: r.stop(a.stop_signals))
    return stops


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="pipeline3,hpo8")
    parser.add_argument("--agent", choices=["conveyor", "clearml-agent"], default="conveyor")
    return parser.parse_args()


def summary(results: dict[str, list[float]]) -> str:
    lines = ["| scenario | runs | median | min | max |", "|---|---|---|---|---|"]
    for name, values in results.items():
        lines.append(
            f"| {name} | {len(values)} | {statistics.median(values):.1f} s "
            f"| {min(values):.1f} s | {max(values):.1f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    wanted = args.only.split(",")
    root = Path(tempfile.mkdtemp(prefix="bench-sdk-"))
    results: dict[str, list[float]] = {name: [] for name in wanted}
    loads: list[float] = []
    with EmbeddedServer(root / "server.db") as server:
        stops = start_agents(args.agent, server, root)
        try:
            env = sdk_env(server)
            base = script(env, BASE, 120) if "hpo8" in wanted else ""
            for run in range(args.runs):
                for name in wanted:
                    loads.append(os.getloadavg()[0])
                    took = (
                        pipeline3(server, env) if name == "pipeline3" else hpo8(server, env, base)
                    )
                    results[name].append(took)
                    print(f"run {run + 1} {name}: {took:.1f} s (load {loads[-1]:.1f})", flush=True)
        finally:
            for stop in reversed(stops):
                stop()
    print(summary(results))
    out = (
        ROOT
        / "bench"
        / "results"
        / f"sdk-workflows-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"agent": args.agent, "load_1min": loads, "cpus": os.cpu_count()}
    out.write_text(json.dumps({"results": results, **meta}))
    print(f"written {out}")


if __name__ == "__main__":
    main()
