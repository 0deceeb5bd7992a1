"""Screenshots of the web console's main pages for the docs (headless Debian chromium).

    .venv/bin/python bench/web_screenshots.py [--out docs/img]

Starts an embedded server with a few example tasks (parameters, a console log with a tqdm
progress line, two loss curves with a spike, a worker's machine stats), logs in and saves PNGs
of the tasks list, the task page's configuration, console and scalars tabs, and the queues
page.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from agent.server.embedded import EmbeddedServer  # noqa: E402
from tests.helpers import api_call  # noqa: E402


def populate(server: EmbeddedServer) -> str:
    project = api_call(server, "projects.create", {"name": "mnist"})["id"]
    params = {
        "Args": {
            k: {"section": "Args", "name": k, "value": v}
            for k, v in {"lr": "0.01", "batch_size": "64", "epochs": "20"}.items()
        }
    }
    config = {"train": {"name": "train", "type": "yaml", "value": "optimizer: adam\nwarmup: 500\n"}}
    task = ""
    for i, status in enumerate(("completed", "failed", "in_progress", "queued", "created")):
        script = {"entry_point": "train.py", "repository": "https://example.org/r.git"}
        body = {"name": f"train resnet #{i}", "type": "training", "project": project,
                "hyperparams": params, "configuration": config, "tags": ["resnet"],
                "script": script}  # fmt: skip
        task = api_call(server, "tasks.create", body)["id"]
        if status != "created":
            api_call(server, "tasks.enqueue", {"task": task, "queue_name": "default"})
        if status in ("completed", "failed", "in_progress"):
            api_call(
                server,
                "queues.get_next_task",
                {"queue": api_call(server, "queues.get_default", {})["id"]},
            )
            api_call(server, "tasks.started", {"task": task})
        if status in ("completed", "failed"):
            api_call(
                server,
                f"tasks.{status}",
                {"task": task, "status_reason": "exit code 3" if status == "failed" else ""},
            )
    events = [
        {"task": task, "type": "log", "msg": f"epoch {e}: loss {1 / (e + 1):.4f}"}
        for e in range(40)
    ]
    events.append(
        {
            "task": task,
            "type": "log",
            "msg": "train: 10%|#   |\rtrain: 60%|####  |\rtrain: 100%|######|",
        }
    )
    for i in range(3000):
        loss = math.exp(-i / 800) + 0.05 * math.sin(i / 20) + (0.8 if i == 1700 else 0)
        events.append(
            {
                "task": task,
                "type": "training_stats_scalar",
                "metric": "loss",
                "variant": "train",
                "value": loss,
                "iter": i,
            }
        )
        events.append(
            {
                "task": task,
                "type": "training_stats_scalar",
                "metric": "loss",
                "variant": "val",
                "value": loss * 1.1 + 0.02,
                "iter": i,
            }
        )
    api_call(server, "events.add_batch", {"requests": events})
    for i in range(60):  # a worker's machine stats, for the queues page's small charts
        stats = {"cpu_usage": [50 + 40 * math.sin(i / 6), 30.0], "memory_used": 9000 + 40 * i,
                 "gpu_usage": [90 - (i % 20)]}  # fmt: skip
        api_call(server, "workers.status_report", {"worker": "gpu-box:0", "task": task,
                                                   "machine_stats": stats})  # fmt: skip
    return str(task)


def shoot(server: EmbeddedServer, task: str, out: Path, profile: str) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--no-sandbox", "--headless", "--disable-gpu",
                 "--window-size=1280,860",
                 f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(f"{server.url}/login")
        driver.find_element(By.NAME, "access_key").send_keys(server.credentials.access_key)
        driver.find_element(By.NAME, "secret_key").send_keys(server.credentials.secret_key)
        driver.find_element(By.CSS_SELECTOR, "[data-action=login]").click()
        wait.until(ec.url_contains("/tasks"))
        driver.save_screenshot(str(out / "web-tasks.png"))
        driver.get(f"{server.url}/tasks/{task}/configuration")
        driver.save_screenshot(str(out / "web-configuration.png"))
        driver.get(f"{server.url}/tasks/{task}/console")
        wait.until(lambda d: "epoch 39" in d.find_element(By.ID, "console").text)
        driver.save_screenshot(str(out / "web-console.png"))
        driver.get(f"{server.url}/tasks/{task}/scalars")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".chart canvas")))
        driver.save_screenshot(str(out / "web-scalars.png"))
        driver.get(f"{server.url}/queues")
        driver.save_screenshot(str(out / "web-queues.png"))
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "s.db") as server:
        shoot(server, populate(server), args.out, str(Path(tmp) / "chromium"))
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
