"""examples/reporting: what a remotely run task reports (scalars, plots, tables, text, console,
debug images, artifacts) read back by another process with the SDK's own getters."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sdk.support import Plane, run, wait_status

pytestmark = pytest.mark.slow

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"

REPORT = f"""
import base64
from pathlib import Path
from clearml import Task
task = Task.init(project_name="sdk/reporting", task_name="report everything")
emit(task.id)
task.execute_remotely(queue_name="default", exit_process=True)
logger = task.get_logger()
for i in range(3):
    logger.report_scalar("accuracy", "val", value=i / 10, iteration=i)
logger.report_scatter2d("curve", "points", iteration=0, scatter=[[0, 1], [1, 4], [2, 9]])
logger.report_table("table", "rows", iteration=0, table_plot=[["name", "n"], ["a", 1], ["b", 2]])
logger.report_text("a text report")
Path("dot.png").write_bytes(base64.b64decode("{PNG}"))
logger.report_image("image", "dot", iteration=0, local_path="dot.png")
task.upload_artifact("stats", artifact_object={{"rows": 2, "ok": True}})
print("console line 42")
"""

READ = """
from clearml import Task
t = Task.get_task(task_id="{task}")
emit({{
    "scalars": t.get_reported_scalars(),
    "plots": [p.get("metric") for p in t.get_reported_plots()],
    "console": t.get_reported_console_output(100),
    "artifact": t.artifacts["stats"].get(),
    "last": t.get_last_scalar_metrics(),
}})
"""

DEBUG = """
from clearml import Task
t = Task.get_task(task_id="{task}")
emit([s.get("url") for s in t.get_debug_samples("image", "dot")])
"""

HUGE_CONSOLE = """
from clearml import Task
emit(len(Task.get_task(task_id="{task}").get_reported_console_output(number_of_reports=100000)))
"""


@pytest.fixture(scope="module")
def reported(plane: Plane) -> str:
    task_id: str = run(plane, REPORT)
    doc = wait_status(plane, task_id)
    assert doc["status"] == "completed", doc["status_reason"]
    return task_id


def test_scalars_plots_console_artifacts_read_back(plane: Plane, reported: str) -> None:
    out: dict[str, Any] = run(plane, READ.format(task=reported))
    assert out["scalars"]["accuracy"]["val"]["y"] == [0.0, 0.1, 0.2]
    assert out["last"]["accuracy"]["val"]["last"] == 0.2
    assert {"curve", "table"} <= set(out["plots"]), out["plots"]
    console = "\n".join(out["console"])
    assert "console line 42" in console
    assert "a text report" in console
    assert out["artifact"] == {"rows": 2, "ok": True}


def test_debug_images_read_back(plane: Plane, reported: str) -> None:
    urls = run(plane, DEBUG.format(task=reported))
    assert len(urls) == 1 and urls[0].endswith(".png"), urls


def test_console_read_with_a_huge_page_size(plane: Plane, reported: str) -> None:
    assert run(plane, HUGE_CONSOLE.format(task=reported)) > 0
