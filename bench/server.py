"""Benchmark the embedded control plane's queue pop (``queues.get_next_task``).

    .venv/bin/python bench/server.py [--claims 3000] [--samples 2000] [--deep 100000]

Measures, against a server running in its own process:
  * claims per second with 1, 8 and 32 concurrent clients (keep-alive HTTP connections,
    spread over up to 4 client processes so the clients' own CPU is not one GIL);
  * p50 / p99 latency of one ``get_next_task`` at queue depth 10 and 100,000 (each measured pop
    is followed by an unmeasured re-enqueue, so the depth stays constant).
Prints a markdown table. The queues are filled directly through the server's own storage code
(one transaction) before the server starts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# agent.server is imported inside the functions that need it: client processes stay light.

CONCURRENCY = (1, 8, 32)
MAX_CLIENT_PROCESSES = 4


# --- helpers shared by parent and children ---------------------------------------------------
class Api:
    """A minimal keep-alive client (http.client: far less client CPU than httpx)."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        self._conn.request("POST", f"/{endpoint}", json.dumps(body), self._headers)
        response = self._conn.getresponse()
        envelope = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{endpoint}: {envelope['meta']}")
        data: dict[str, Any] = envelope["data"]
        return data


def login(url: str, key: str, secret: str) -> str:
    import base64

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    auth = base64.b64encode(f"{key}:{secret}".encode()).decode()
    conn.request("GET", "/auth.login", headers={"Authorization": f"Basic {auth}"})
    token: str = json.loads(conn.getresponse().read())["data"]["token"]
    return token


# --- child: the server ------------------------------------------------------------------------
def serve_child(db: Path) -> None:
    from agent.server.embedded import EmbeddedServer

    with EmbeddedServer(db, watchdog_interval=3600) as server:
        creds = server.credentials
        print(json.dumps({"url": server.url, "key": creds.access_key, "secret": creds.secret_key}))
        sys.stdout.flush()
        sys.stdin.read()  # until the parent closes our stdin


# --- child: clients ---------------------------------------------------------------------------
def client_child(url: str, token: str, queue: str, claims: int, threads: int) -> None:
    per_thread = [claims // threads + (1 if i < claims % threads else 0) for i in range(threads)]
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)
    window = {"start": 0.0, "end": 0.0}

    def work(count: int) -> None:
        api = Api(url, token)
        api.call("queues.get_num_entries", {"queue": queue})  # connect before the clock starts
        if barrier.wait() == 0:
            window["start"] = time.time()
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            if not api.call("queues.get_next_task", {"queue": queue}).get("entry"):
                raise RuntimeError("queue ran dry: fill it deeper")
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(n,)) for n in per_thread]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    window["end"] = time.time()
    print(json.dumps({**window, "latencies": latencies}))


# --- parent -----------------------------------------------------------------------------------
def fill(db: Path, name: str, depth: int) -> str:
    from agent.server import queue_ops
    from agent.server.bootstrap import open_state
    from agent.server.state import ServerConfig
    from agent.server.tasks import new_task_doc
    from agent.server.taskstore import insert_task

    state = open_state(ServerConfig(db_path=db))
    try:
        with state.store.write() as conn:
            queue = queue_ops.create_queue(conn, name, "bench")["id"]
            for n in range(depth):
                doc = new_task_doc({"name": f"{name}-{n}", "status": "queued"}, "bench")
                insert_task(conn, doc)
                queue_ops.push(conn, queue, doc["id"])
        return str(queue)
    finally:
        state.store.close()


def start_server(db: Path) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info["url"], login(info["url"], info["key"], info["secret"])


def throughput(
    url: str, token: str, queue: str, clients: int, claims: int, server_pid: int
) -> tuple[float, float]:
    """(claims per second, server CPU ms per claim)."""
    processes = min(clients, MAX_CLIENT_PROCESSES)
    threads = clients // processes
    per_proc = claims // processes
    argv = [sys.executable, __file__, "--client", url, token, queue, str(per_proc), str(threads)]
    server = psutil.Process(server_pid)
    cpu_before = sum(server.cpu_times()[:2])
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError("client failed")
        results.append(json.loads(out))
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    total = sum(len(r["latencies"]) for r in results)
    # From the first client's first claim to the last client's last: process start-up and
    # connection set-up are outside the window.
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return total / elapsed, cpu * 1000 / total


def latency(url: str, token: str, queue: str, samples: int) -> tuple[float, float]:
    """p50/p99 (ms) of get_next_task at constant depth: pop (timed), then re-enqueue."""
    api = Api(url, token)
    timings = []
    for _ in range(samples):
        start = time.perf_counter()
        entry = api.call("queues.get_next_task", {"queue": queue})["entry"]
        timings.append(time.perf_counter() - start)
        api.call("tasks.enqueue", {"task": entry["task"], "queue": queue})
    cuts = statistics.quantiles(timings, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=3000, help="claims per concurrency level")
    parser.add_argument("--samples", type=int, default=2000, help="latency samples per depth")
    parser.add_argument("--deep", type=int, default=100_000, help="the deep queue's depth")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        db = Path(tmp) / "bench.db"
        started = time.perf_counter()
        pool = fill(db, "throughput", args.claims * len(CONCURRENCY))
        shallow = fill(db, "shallow", 10)
        deep = fill(db, "deep", args.deep)
        print(f"filled queues in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        proc, url, token = start_server(db)
        try:
            rates = {c: throughput(url, token, pool, c, args.claims, proc.pid) for c in CONCURRENCY}
            depths = {10: latency(url, token, shallow, args.samples)}
            depths[args.deep] = latency(url, token, deep, args.samples)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)
    print(f"\nqueues.get_next_task on {os.cpu_count()} cores (server in its own process)\n")
    print("| concurrent clients | claims/s | server CPU per claim (ms) |")
    print("|---:|---:|---:|")
    for clients, (rate, cpu) in rates.items():
        print(f"| {clients} | {rate:,.0f} | {cpu:.2f} |")
    print("\n| queue depth | p50 latency (ms) | p99 latency (ms) |")
    print("|---:|---:|---:|")
    for depth, (p50, p99) in depths.items():
        print(f"| {depth:,} | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve_child(Path(sys.argv[2]))
    elif len(sys.argv) > 6 and sys.argv[1] == "--client":
        client_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
