"""Benchmark the web console's server side: list, task page, console, search, chart.

    .venv/bin/python bench/web.py [--tasks 100000] [--lines 1000000] [--series 10]
                                  [--points 1000000] [--runs 7]

Fills a fresh database directly through the server's storage code (tasks, one task's log of
``--lines`` lines, ``--series`` scalar series of ``--points`` points each), starts the
embedded server in this process, logs in like a browser and times each request end to end over
a keep-alive loopback connection (median of ``--runs``; the first, cold run is reported apart).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.server import scalar_store  # noqa: E402
from agent.server.embedded import EmbeddedServer  # noqa: E402
from agent.server.store import Store, dumps  # noqa: E402
from agent.server.tasks import new_task_doc  # noqa: E402
from agent.server.taskstore import insert_task  # noqa: E402

COMPARED = 200  # the first tasks have 50 parameters and 20 metrics each: compared at once
STATUSES = ("completed", "failed", "stopped", "in_progress", "queued", "created")


def fill(db: Path, tasks: int, lines: int, series: int, points: int) -> str:
    """Tasks, one big task's log and scalars; returns the big task's id."""
    store = Store(db)
    started = time.monotonic()
    with store.write() as conn:
        for i in range(tasks):
            doc = new_task_doc({"name": f"task {i}", "status": STATUSES[i % 6]}, "bench")
            doc["tags"] = [f"tag{i % 10}"]
            if i < COMPARED:
                doc["hyperparams"] = {"Args": {f"p{k}": {"section": "Args", "name": f"p{k}",
                                      "value": str(k * (i % 3))} for k in range(50)}}  # fmt: skip
                doc["last_metrics"] = {f"m{k}": {"v": {"metric": f"metric{k}", "variant": "v",
                                       "value": i / 7, "min_value": 0.0, "max_value": i}}
                                       for k in range(20)}  # fmt: skip
            insert_task(conn, doc)
        big = new_task_doc({"name": "big task"}, "bench")
        insert_task(conn, big)
    big_id = str(big["id"])
    for start in range(0, lines, 100_000):
        with store.write() as conn:
            conn.executemany(
                "INSERT INTO events (task, type, timestamp, doc) VALUES (?, 'log', ?, ?)",
                (
                    (big_id, 1_700_000_000_000 + n,
                     dumps({"task": big_id, "type": "log", "msg": f"line {n}: loss {n % 97}"}))
                    for n in range(start, min(lines, start + 100_000))
                ),
            )  # fmt: skip
    _fill_scalars(store, big_id, series, points)
    store.close()
    print(f"filled in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return big_id


def _fill_scalars(store: Store, task_id: str, series: int, points: int) -> None:
    metrics = {}
    for s in range(series):
        metric, variant = f"metric{s}", "value"
        for start in range(0, points, 200_000):
            events = [
                {"task": task_id, "type": "training_stats_scalar", "iter": i,
                 "timestamp": 1_700_000_000_000 + i, "metric": metric, "variant": variant,
                 "value": (i % 1000) / 7}
                for i in range(start, min(points, start + 200_000))
            ]  # fmt: skip
            with store.write() as conn:
                conn.executemany(
                    "INSERT INTO events (task, type, timestamp, iter, metric, variant, doc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ((task_id, e["type"], e["timestamp"], e["iter"], metric, variant, dumps(e))
                     for e in events),
                )  # fmt: skip
                scalar_store.append(conn, events)
        metrics[f"m{s}"] = {"v": {"metric": metric, "variant": variant, "value": 0.0}}
    with store.write() as conn:
        row = conn.execute("SELECT doc FROM tasks WHERE id=?", (task_id,)).fetchone()
        doc = json.loads(row[0])
        doc["last_metrics"] = metrics
        conn.execute("UPDATE tasks SET doc=? WHERE id=?", (dumps(doc), task_id))


class Browser:
    def __init__(self, url: str, key: str, secret: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=120)
        body = urlencode({"access_key": key, "secret_key": secret})
        self._conn.request(
            "POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        reply = self._conn.getresponse()
        reply.read()
        self._cookie = reply.getheader("set-cookie", "").split(";")[0]

    def get(self, path: str) -> tuple[float, float, int]:
        """(seconds to the first byte, seconds to the last, body bytes)."""
        started = time.perf_counter()
        self._conn.request("GET", path, headers={"Cookie": self._cookie})
        reply = self._conn.getresponse()
        first = time.perf_counter() - started
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{path}: {reply.status} {body[:200]!r}")
        return first, time.perf_counter() - started, len(body)


def measure(browser: Browser, path: str, runs: int) -> tuple[float, float, float, int]:
    cold = browser.get(path)
    timings = [browser.get(path) for _ in range(runs)]
    return (
        cold[1],
        statistics.median(t[0] for t in timings),
        statistics.median(t[1] for t in timings),
        timings[-1][2],
    )


def _cases(big: str, args: argparse.Namespace, compared: list[str]) -> list[tuple[str, str]]:
    t, n = f"/tasks/{big}", args.points
    return [
        (
            f"compare {len(compared)} tasks (50 parameters, 20 metrics each)",
            "/compare?ids=" + ",".join(compared),
        ),
        (f"tasks list, first page ({args.tasks:,} tasks)", "/tasks"),
        ("tasks list, status + tag filter, by name", "/tasks?status=failed&tag=tag3&sort=name"),
        ("task page (configuration tab)", f"{t}/configuration"),
        (f"console tail ({args.lines:,}-line log)", f"{t}/log.json"),
        ("console page in the middle", f"{t}/log.json?offset={args.lines // 2}&limit=500"),
        ("console regex search, 500 matches", f"{t}/log.json?q={quote('loss 42$')}"),
        ("console regex search, whole log", f"{t}/log.json?q={quote('line 99999[0-9]:')}"),
        (
            f"chart: 1 series x {n:,} points, 1,000 px",
            f"{t}/scalars.json?metric=metric0&width=1000",
        ),
        ("chart zoomed to 1% of x", f"{t}/scalars.json?metric=metric0&width=1000&xmax={n // 100}"),
    ]


def report(browser: Browser, big: str, args: argparse.Namespace, compared: list[str]) -> None:
    print("| request | cold (ms) | first byte p50 (ms) | total p50 (ms) | bytes |")
    print("|---|---:|---:|---:|---:|")
    for label, path in _cases(big, args, compared):
        cold, first, total, size = measure(browser, path, args.runs)
        row = f"| {label} | {cold * 1e3:.0f} | {first * 1e3:.0f} | {total * 1e3:.0f} | {size:,} |"
        print(row, flush=True)
    started = time.perf_counter()
    for s in range(args.series):
        browser.get(f"/tasks/{big}/scalars.json?metric=metric{s}&width=1000")
    elapsed = (time.perf_counter() - started) * 1e3
    print(f"| chart: {args.series} series x {args.points:,} points | | | {elapsed:.0f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        db = Path(tmp) / "server.db"
        big = fill(db, args.tasks, args.lines, args.series, args.points)
        with EmbeddedServer(db) as server:
            creds = server.credentials
            browser = Browser(server.url, creds.access_key, creds.secret_key)
            compared = [
                str(r[0])
                for r in server.state.store.conn().execute(
                    "SELECT id FROM tasks ORDER BY created LIMIT ?", (COMPARED,)
                )
            ]
            report(browser, big, args, compared)


if __name__ == "__main__":
    main()
