"""Conveyor and clearml-agent 3.0.3 side by side, against the same embedded server.

    .venv/bin/python bench/compare/run.py [--runs 5] [--only pickup,env3,...] [--lines 1000000]

One embedded server runs in this process, behind a request recorder (counts requests per
client, keeps failing requests whole). Both agents run as real daemons with their own
directories; every scenario alternates them (the order flips each round). Scenarios:

  pickup  enqueue → first script line, warm caches
  env3    cold environment (fresh caches for both agents), 3 pinned pure-Python packages
  env30   the same with 30 packages
  torch   torch 2.13.0 CPU wheel from /opt/wheels: one cold run, then warm runs
  logs    1,000,000 log lines printed as fast as possible: lost lines, lines broken in two,
          lag (printed → at the server), the script's wall time vs bare
  logs_paced  the same lines at 20,000 lines/s (--log-rate)
  abort   tasks.stop → the task's whole process tree is gone
  abort_sdk  the same for a clearml SDK script (Task.init: the SDK swallows SIGTERM)
  idle    an idle agent over 60 s: CPU and RSS of its process tree, requests per minute

Prints a markdown table and writes JSON to bench/results/compare-<UTC time>.json.
clearml-agent is installed once into its own virtualenv under ~/.cache/conveyor-bench
(CONVEYOR_BENCH_CACHE overrides).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from agent import __version__  # noqa: E402
from bench.compare import report  # noqa: E402
from bench.compare import scenarios as sc  # noqa: E402
from bench.compare import tasks as t  # noqa: E402
from bench.compare.agents import (  # noqa: E402
    CLEARML_AGENT_VERSION,
    AgentKind,
    AgentUnavailable,
    ClearmlAgent,
    Conveyor,
    ensure_clearml_agent,
)
from bench.compare.server import Api, BenchServer  # noqa: E402

SCENARIOS = (
    "pickup", "env3", "env30", "torch", "logs", "logs_paced", "abort", "abort_sdk", "idle"
)  # fmt: skip
RESULTS = ROOT / "bench" / "results"


def conditions(args: argparse.Namespace) -> dict[str, Any]:
    uv = ROOT / ".venv" / "bin" / "uv"
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "versions": {
            "conveyor": __version__,
            "clearml_agent": CLEARML_AGENT_VERSION,
            "clearml_agent_package_manager": ClearmlAgent().package_manager,
            "uv": os.popen(f"{uv} --version").read().strip(),
        },
        "runs": args.runs,
        "scenarios": args.only,
        "log_lines": args.lines,
        "log_rate_paced": args.log_rate,
        "idle_window_s": args.idle_window,
        "packages_3": list(t.PACKAGES_3),
        "packages_30": list(t.PACKAGES_30),
        "torch_requirements": list(t.TORCH_REQUIREMENTS),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per agent")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma list of scenarios")
    parser.add_argument("--lines", type=int, default=1_000_000, help="log scenario's lines")
    parser.add_argument("--log-rate", type=int, default=20_000, help="logs_paced: lines/s")
    parser.add_argument("--idle-window", type=float, default=60.0, help="seconds")
    parser.add_argument("--agents", default="conveyor,clearml-agent")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    args.only = [s for s in args.only.split(",") if s]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def plan(bench: sc.Bench, args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    return {
        "pickup": lambda: sc.pickup(bench),
        "env3": lambda: sc.cold_environment(bench, "env3", t.PACKAGES_3),
        "env30": lambda: sc.cold_environment(bench, "env30", t.PACKAGES_30),
        "torch": lambda: sc.warm_torch(bench),
        "logs": lambda: sc.log_delivery(bench, "logs", args.lines),
        "logs_paced": lambda: sc.log_delivery(bench, "logs_paced", args.lines, args.log_rate),
        "abort": lambda: sc.abort(bench),
        "abort_sdk": lambda: sc.abort(bench, "abort_sdk", sdk=True),
        "idle": lambda: sc.idle(bench, args.idle_window),
    }


def main() -> None:
    args = parse_args()
    kinds: dict[str, AgentKind] = {
        "conveyor": Conveyor(),
        "clearml-agent": ClearmlAgent(),
    }
    agents = [kinds[name] for name in args.agents.split(",")]
    if any(a.name == "clearml-agent" for a in agents):
        print("clearml-agent:", ensure_clearml_agent(), file=sys.stderr)
    meta = conditions(args)
    work = Path(tempfile.mkdtemp(prefix="conveyor-compare-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"compare-{stamp}.json"
    with BenchServer(work / "server.db") as server:
        bench = sc.Bench(server, Api(server), work, agents, args.runs)
        steps = plan(bench, args)
        for name in args.only:
            started = time.monotonic()
            print(f"== {name}", file=sys.stderr, flush=True)
            try:
                steps[name]()
            except (AgentUnavailable, RuntimeError, TimeoutError, OSError) as exc:
                bench.note(name, "harness", f"scenario aborted: {type(exc).__name__}: {exc}")
            print(f"== {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            meta.setdefault("load_average_after", {})[name] = os.getloadavg()
            meta.setdefault("seconds", {})[name] = round(time.monotonic() - started)
            save(out, meta, bench, server)  # a long run keeps what it has measured so far
    print(report.markdown(report.summarise(bench.samples), bench.notes))
    print(f"\nJSON: {out}  work: {work if args.keep else '(removed)'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def save(out: Path, meta: dict[str, Any], bench: sc.Bench, server: BenchServer) -> None:
    meta = {
        **meta,
        "load_average_now": os.getloadavg(),
        "failed_requests": [asdict(f) for f in server.recorder.failures],
    }
    out.write_text(json.dumps(report.document(meta, bench.samples, bench.notes), indent=1))


if __name__ == "__main__":
    main()
