"""examples/optimization/hyper-parameter-optimization: HyperParameterOptimizer with GridSearch
and RandomSearch cloning a base task on `default`, the objective read from the clones' scalars,
the concurrency limit honoured, the top experiments reported."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.helpers import api_call
from tests.sdk.support import Plane, run

pytestmark = pytest.mark.slow

BASE = """
from clearml import Task
task = Task.init(project_name="sdk/hpo", task_name="objective")
params = task.connect({"x": 1, "y": 1})
score = int(params["x"]) * 10 + int(params["y"])
task.get_logger().report_scalar("score", "score", value=score, iteration=0)
print("score", score)
task.close()
emit(task.id)
"""

OPTIMIZE = """
from clearml import Task
from clearml.automation import (DiscreteParameterRange, GridSearch, HyperParameterOptimizer,
                                RandomSearch)
task = Task.init(project_name="sdk/hpo", task_name="optimizer {kind}",
                 task_type=Task.TaskTypes.optimizer, reuse_last_task_id=False)
optimizer = HyperParameterOptimizer(
    base_task_id="{base}",
    hyper_parameters=[DiscreteParameterRange("General/x", values=[1, 2]),
                      DiscreteParameterRange("General/y", values={ys})],
    objective_metric_title="score", objective_metric_series="score",
    objective_metric_sign="max", max_number_of_concurrent_tasks={concurrency},
    optimizer_class={kind}, execution_queue="default", total_max_jobs={jobs},
    pool_period_min=0.02, save_top_k_tasks_only=None,
)
optimizer.set_report_period(0.05)  # the reporter sleeps this long before stop() returns
optimizer.start()
optimizer.wait()
top = optimizer.get_top_experiments(top_k=2)
optimizer.stop()
emit({{"optimizer": task.id,
       "top": [t.get_last_scalar_metrics()["score"]["score"]["last"] for t in top]}})
"""


FIELDS = ["hyperparams"]


def clones(plane: Plane, optimizer: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = api_call(
        plane.server,
        "tasks.get_all",
        {"parent": optimizer, "only_fields": ["id", "status", "created", "completed", *FIELDS]},
    )["tasks"]
    return tasks


def most_at_once(tasks: list[dict[str, Any]]) -> int:
    """How many clones existed unfinished at the same time (created → completed)."""
    edges = []
    for t in tasks:
        edges.append((datetime.fromisoformat(t["created"]), 1))
        edges.append((datetime.fromisoformat(t["completed"]), -1))  # sorts before a start
    level = peak = 0
    for _, step in sorted(edges):
        level += step
        peak = max(peak, level)
    return peak


@pytest.fixture(scope="module")
def base(plane: Plane) -> str:
    task_id: str = run(plane, BASE)
    return task_id


def test_grid_search_one_at_a_time(plane: Plane, base: str) -> None:
    out = run(
        plane,
        OPTIMIZE.format(kind="GridSearch", base=base, ys=[1], concurrency=1, jobs=2),
        timeout=400,
    )
    made = clones(plane, out["optimizer"])
    assert len(made) == 2 and all(t["status"] == "completed" for t in made), made
    assert most_at_once(made) == 1  # the agent has two slots: the limit is the optimiser's
    assert out["top"] == [21, 11]


def test_random_search_two_at_a_time(plane: Plane, base: str) -> None:
    out = run(
        plane,
        OPTIMIZE.format(kind="RandomSearch", base=base, ys=[1, 2, 3], concurrency=2, jobs=4),
        timeout=400,
    )
    made = clones(plane, out["optimizer"])
    # total_max_jobs is checked per round: a multiple of the concurrency is met exactly.
    assert len(made) == 4 and all(t["status"] == "completed" for t in made), made
    assert most_at_once(made) <= 2
    scores = sorted(
        (int(t["hyperparams"]["General"]["x"]["value"]) * 10
         + int(t["hyperparams"]["General"]["y"]["value"]) for t in made),
        reverse=True,
    )  # fmt: skip
    assert out["top"] == scores[:2]
