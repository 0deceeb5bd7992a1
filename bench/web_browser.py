"""Benchmark the web console in the real browser: page load, chart paint, live console line.

    .venv/bin/python bench/web_browser.py [--tasks 10000] [--lines 1000000] [--series 10]
                                          [--points 1000000] [--runs 5]

Fills a fresh database like bench/web.py (tasks, one task's log of ``--lines`` lines) plus one
metric with ``--series`` variants of ``--points`` points each, starts the embedded server in
this process and drives Debian's headless chromium (as tests/web does):

- page load: navigation start -> load event (``PerformanceNavigationTiming``) of the task page's
  tabs and the tasks list;
- chart paint: the scalars tab's ``performance.mark``s (``chart-load:<metric>`` when the chart
  asks the server, ``chart-drawn:<metric>`` in uPlot's draw hook, static/app.js): request ->
  drawn, and navigation start -> drawn;
- live console: a line carrying its wall-clock time is sent with ``events.add_batch`` while the
  console tab is open; a MutationObserver in the page notes when it shows.

Medians of ``--runs`` (the first, cold run reported apart). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from agent.server import scalar_store  # noqa: E402
from agent.server.embedded import EmbeddedServer  # noqa: E402
from agent.server.store import Store, dumps  # noqa: E402
from bench.web import fill  # noqa: E402
from tests.helpers import api_call  # noqa: E402

METRIC = "loss"
LOAD_JS = (
    "const n = performance.getEntriesByType('navigation')[0];"
    "return n.loadEventEnd > 0 ? n.loadEventEnd - n.startTime : null;"
)
CHART_JS = (
    "const m = arguments[0];"
    "const load = performance.getEntriesByName('chart-load:' + m)[0];"
    "const drawn = performance.getEntriesByName('chart-drawn:' + m)[0];"
    "return load && drawn ? [drawn.startTime - load.startTime, drawn.startTime] : null;"
)
WATCH_JS = """
const token = arguments[0];
window.__seen = null;
new MutationObserver((_, obs) => {
  if (document.getElementById('console').textContent.includes(token)) {
    window.__seen = Date.now(); obs.disconnect();
  }
}).observe(document.getElementById('console'), {childList: true, subtree: true});
"""


def fill_chart(db: Path, task_id: str, series: int, points: int) -> None:
    """One metric, ``series`` variants of ``points`` points, in the compact scalar store only
    (the chart reads nothing else)."""
    store = Store(db)
    for s in range(series):
        for start in range(0, points, 200_000):
            events = [
                {"task": task_id, "type": "training_stats_scalar", "iter": i,
                 "timestamp": 1_700_000_000_000 + i, "metric": METRIC, "variant": f"v{s}",
                 "value": (i % 1000) / 7 + s}
                for i in range(start, min(points, start + 200_000))
            ]  # fmt: skip
            with store.write() as conn:
                scalar_store.append(conn, events)
    with store.write() as conn:
        row = conn.execute("SELECT doc FROM tasks WHERE id=?", (task_id,)).fetchone()
        doc = json.loads(row[0])
        doc["last_metrics"] = {
            "m": {
                f"v{s}": {"metric": METRIC, "variant": f"v{s}", "value": 0.0} for s in range(series)
            }
        }
        conn.execute("UPDATE tasks SET doc=? WHERE id=?", (dumps(doc), task_id))
    store.close()


def start_browser(profile: str) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--no-sandbox", "--headless", "--disable-gpu", "--window-size=1280,900",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def log_in(driver: WebDriver, server: EmbeddedServer) -> None:
    driver.get(f"{server.url}/login")
    driver.find_element(By.NAME, "access_key").send_keys(server.credentials.access_key)
    driver.find_element(By.NAME, "secret_key").send_keys(server.credentials.secret_key)
    driver.find_element(By.CSS_SELECTOR, "[data-action=login]").click()
    WebDriverWait(driver, 30).until(lambda d: "/tasks" in d.current_url)


def until(driver: WebDriver, script: str, *args: Any) -> Any:
    return WebDriverWait(driver, 60, poll_frequency=0.02).until(
        lambda d: d.execute_script(script, *args)
    )


def page_load(driver: WebDriver, url: str) -> float:
    driver.get(url)
    return float(until(driver, LOAD_JS))


def chart_paint(driver: WebDriver, url: str) -> tuple[float, float]:
    driver.get(url)
    request_to_drawn, nav_to_drawn = until(driver, CHART_JS, METRIC)
    return float(request_to_drawn), float(nav_to_drawn)


def console_latency(driver: WebDriver, server: EmbeddedServer, task: str, n: int) -> float:
    """Milliseconds from sending a line to the open console showing it."""
    token = f"bench-line-{n}-{time.time_ns()}"
    driver.execute_script(WATCH_JS, token)
    sent = time.time() * 1000
    api_call(
        server, "events.add_batch",
        {"requests": [{"task": task, "type": "log", "msg": token, "timestamp": int(sent)}]},
    )  # fmt: skip
    return float(until(driver, "return window.__seen;")) - sent


def row(label: str, values: list[float], target: str) -> str:
    cold, rest = values[0], values[1:] or values[:1]
    return f"| {label} | {cold:.0f} | {statistics.median(rest):.0f} | {max(rest):.0f} | {target} |"


def report(driver: WebDriver, server: EmbeddedServer, big: str, args: argparse.Namespace) -> None:
    runs, t = range(args.runs + 1), f"{server.url}/tasks/{big}"
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores\n")
    print("| browser timing | cold (ms) | p50 (ms) | max (ms) | target |")
    print("|---|---:|---:|---:|---|")
    lists = [page_load(driver, f"{server.url}/tasks") for _ in runs]
    print(row(f"tasks list load ({args.tasks:,} tasks)", lists, ""), flush=True)
    for tab in ("execution", "configuration", "info", "console", "scalars"):
        loads = [page_load(driver, f"{t}/{tab}") for _ in runs]
        print(row(f"task page load, {tab} tab", loads, "≤ 1,000"), flush=True)
    paints = [chart_paint(driver, f"{t}/scalars") for _ in runs]
    label = f"chart {args.series} x {args.points:,} points"
    print(row(f"{label}: request → drawn", [p[0] for p in paints], "≤ 500"))
    print(row(f"{label}: navigation → drawn", [p[1] for p in paints], ""), flush=True)
    driver.get(f"{t}/console")
    until(driver, "return document.querySelectorAll('#console .line').length > 0;")
    lines = [console_latency(driver, server, big, n) for n in runs]
    print(row("new console line → shown in the open console", lines, "≤ 1,000"))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-browser-") as tmp:
        db = Path(tmp) / "server.db"
        big = fill(db, args.tasks, args.lines, 0, 0)
        fill_chart(db, big, args.series, args.points)
        driver = start_browser(str(Path(tmp) / "chromium"))
        try:
            with EmbeddedServer(db) as server:
                log_in(driver, server)
                report(driver, server, big, args)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
