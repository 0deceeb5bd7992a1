import signal
from pathlib import Path

import pytest

from agent.api.models import TaskSpec
from agent.config.settings import Settings
from agent.errors import StageError
from agent.pipeline.host import HostFacts, ServerAccess, allocate_gpus
from agent.pipeline.plan import make_plan, scrub_agent_env, split_entry_point

HOST = HostFacts(hostname="box", gpu_count=0, agent_python="3.11")
SERVER = ServerAccess("http://127.0.0.1:9", "", "", "KEY", "SECRET")


def _task(**script: object) -> TaskSpec:
    doc = {
        "id": "t1",
        "name": "train",
        "script": {"repository": "https://h/r.git", "entry_point": "train.py", **script},
        "output": {"destination": "file:///models"},
    }
    return TaskSpec.parse(doc)


def test_plan_carries_revision_requirements_and_sdk_env(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, worker_id="w1")
    task = _task(version_num="abc123", binary="python3.10", requirements={"pip": "six==1.16.0"})
    plan = make_plan(task, settings, HOST, SERVER, gpus=(0,))
    assert plan.source.commit == "abc123"
    assert plan.source.repository == "https://h/r.git"
    assert plan.environment.python == "python3.10"
    assert plan.environment.requirements == "six==1.16.0"
    assert plan.task_dir == tmp_path / "work" / "t1"
    assert plan.env["CLEARML_TASK_ID"] == "t1"
    assert plan.env["CLEARML_WORKER_ID"] == "w1"
    assert plan.env["CLEARML_LOG_TASK_TO_BACKEND"] == "0"
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert plan.env["CONVEYOR_OUTPUT_URI"] == "file:///models"
    assert plan.argv(Path("/v/bin/python"), Path("/src/train.py")) == [
        "/v/bin/python",
        "-u",
        "/src/train.py",
    ]


def test_default_python_is_the_agents(tmp_path: Path) -> None:
    plan = make_plan(_task(), Settings(data_dir=tmp_path), HOST, SERVER)
    assert plan.environment.python == "3.11"
    assert plan.env["CUDA_VISIBLE_DEVICES"] == ""


def test_module_entry_point_and_args() -> None:
    assert split_entry_point("-m pkg.train --lr 0.1") == ("pkg.train", True, ("--lr", "0.1"))
    assert split_entry_point("train.py  x") == ("train.py", False, ("x",))
    with pytest.raises(StageError, match="cannot be parsed"):
        split_entry_point("train.py 'unclosed")


def test_nothing_to_run_is_a_clear_failure(tmp_path: Path) -> None:
    task = TaskSpec.parse({"id": "t2", "script": {}})
    with pytest.raises(StageError, match="no repository and no script"):
        make_plan(task, Settings(data_dir=tmp_path), HOST, SERVER)


def test_literal_script_needs_no_repository(tmp_path: Path) -> None:
    task = TaskSpec.parse({"id": "t3", "script": {"diff": "print('hi')\n", "entry_point": "a.py"}})
    plan = make_plan(task, Settings(data_dir=tmp_path), HOST, SERVER)
    assert plan.source.diff == "print('hi')\n"
    assert plan.source.repository == ""


def test_agent_env_is_scrubbed() -> None:
    env = scrub_agent_env(
        {"PATH": "/bin", "CLEARML_TASK_ID": "old", "CONVEYOR_SECRET_KEY": "s", "VIRTUAL_ENV": "/v"}
    )
    assert env == {"PATH": "/bin"}


@pytest.mark.parametrize(
    ("request_", "count", "slots", "expected"),
    [
        ("none", 4, 2, [(), ()]),
        ("all", 4, 2, [(0, 1), (2, 3)]),
        ("all", 2, 1, [(0, 1)]),
        ("0,3", 4, 1, [(0, 3)]),
        ("all", 1, 2, [(0,), ()]),
        ("all", 0, 1, [()]),
    ],
)
def test_allocate_gpus(
    request_: str, count: int, slots: int, expected: list[tuple[int, ...]]
) -> None:
    assert allocate_gpus(request_, count, slots) == expected


def test_an_sdk_script_is_stopped_with_sigint_first(tmp_path: Path) -> None:
    # The SDK swallows SIGTERM (see SDK_STOP_SIGNALS); a plain script gets SIGTERM alone.
    settings = Settings(data_dir=tmp_path)
    sdk = TaskSpec.parse(
        {"id": "t4", "script": {"diff": "from clearml import Task\n", "entry_point": "a.py"}}
    )
    plain = TaskSpec.parse({"id": "t5", "script": {"diff": "print(1)\n", "entry_point": "a.py"}})
    assert make_plan(sdk, settings, HOST, SERVER).stop_signals == (
        signal.SIGINT,
        signal.SIGTERM,
    )
    assert make_plan(plain, settings, HOST, SERVER).stop_signals == (signal.SIGTERM,)
