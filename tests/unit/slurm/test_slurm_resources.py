"""The whitelist that turns queue mappings and a task's Slurm section into sbatch options."""

from __future__ import annotations

import pytest

from agent.slurm.resources import ResourceError, check_queue_map, job_options, queue_cap

QUEUES = {"gpu": {"partition": "gpu", "account": "ml", "gres": "gpu:1", "max_jobs": "4"}}


def test_defaults_then_queue_then_task() -> None:
    options = job_options(
        "gpu", {"time": "60", "mem": "4G"}, QUEUES, {"gres": "gpu:a100:2", "cpus-per-task": "8"}
    )
    assert options == [
        "--account=ml", "--cpus-per-task=8", "--gres=gpu:a100:2", "--mem=4G",
        "--partition=gpu", "--time=60",
    ]  # fmt: skip


def test_an_unmapped_queue_gets_the_defaults_only() -> None:
    assert job_options("cpu", {"time": "1-00:00:00"}, QUEUES, {}) == ["--time=1-00:00:00"]


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"partition": "big"}, "'partition' is not allowed"),  # where it runs: the queue's
        ({"account": "other"}, "'account' is not allowed"),  # who pays: the queue's
        ({"wrap": "rm -rf /"}, "'wrap' is not allowed"),
        ({"gres": "gpu:1 --wrap=x"}, "is not e.g. gpu:2"),
        ({"gres": "gpu:1;id"}, "is not e.g. gpu:2"),
        ({"time": "$(id)"}, "is not minutes"),
        ({"mem": "4G\n#SBATCH --uid=0"}, "is not e.g. 16G"),
        ({"cpus_per_task": "-1"}, "is not a number of CPUs"),
    ],
)
def test_a_task_cannot_inject_options_or_shell(section: dict[str, str], says: str) -> None:
    with pytest.raises(ResourceError, match="task section Slurm") as caught:
        job_options("gpu", {}, QUEUES, section)
    assert says in str(caught.value)


def test_empty_task_values_mean_not_set() -> None:
    assert job_options("gpu", {}, {}, {"gres": " ", "time": ""}) == []


def test_queue_map_is_checked_at_start_up() -> None:
    check_queue_map(QUEUES)
    with pytest.raises(ResourceError, match=r"slurm_queues\.gpu: 'nodes' is not allowed"):
        check_queue_map({"gpu": {"nodes": "4"}})
    with pytest.raises(ResourceError, match="max_jobs must be a number"):
        check_queue_map({"gpu": {"max_jobs": "many"}})


def test_queue_cap() -> None:
    assert queue_cap("gpu", QUEUES, 20) == 4
    assert queue_cap("cpu", QUEUES, 20) == 20
