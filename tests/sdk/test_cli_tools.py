"""The SDK's `clearml-task` and Conveyor's own `clone` / `ls` from a shell, against the agents."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, api_call
from tests.integration.daemon.support import CONVEYOR, agent_env
from tests.sdk.support import Plane, console_text, wait_status

pytestmark = pytest.mark.slow

TRAIN = """
import argparse
from clearml import Task
task = Task.init()
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
args = parser.parse_args()
print(f"cli lr is {args.lr}")
"""


def clearml_task(plane: Plane, cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "clearml-task"), *args],
        cwd=cwd, env=plane.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line.split("id=")[1].split()[0] for line in proc.stdout.splitlines() if "id=" in line]
    assert ids, proc.stdout
    return ids[0]


def conveyor(plane: Plane, tmp: Path, *args: str) -> str:
    env = agent_env(plane.server, tmp / "cli", tmp / "cache", "cli")
    proc = subprocess.run(
        [str(CONVEYOR), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def cli_task(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("clearml-task")
    (work / "train.py").write_text(TRAIN)
    (work / "requirements.txt").write_text("clearml==2.1.12\n")
    task_id = clearml_task(
        plane, work, "--project", "sdk/cli", "--name", "from clearml-task", "--script",
        "train.py", "--args", "lr=0.3", "--requirements", "requirements.txt", "--queue", "default",
    )  # fmt: skip
    doc = wait_status(plane, task_id)
    assert doc["status"] == "completed", (doc["status_reason"], console_text(plane.server, task_id))
    return task_id


def test_clearml_task_script_args_requirements(plane: Plane, cli_task: str) -> None:
    assert "cli lr is 0.3" in console_text(plane.server, cli_task)


def test_conveyor_clone_set_queue_and_ls(plane: Plane, cli_task: str, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_text("w")
    new_id = conveyor(
        plane, tmp_path, "clone", cli_task, "--name", "cloned by conveyor", "--set",
        "Args/lr=0.7", "--input-model", weights.as_uri(), "--queue", "default",
    )  # fmt: skip
    doc = wait_status(plane, new_id)
    assert doc["status"] == "completed", doc["status_reason"]
    assert "cli lr is 0.7" in console_text(plane.server, new_id)
    assert [m["name"] for m in doc["models"]["input"]] == ["Input Model"]
    listed = json.loads(
        conveyor(plane, tmp_path, "ls", "tasks", "--status", "completed", "--project", "sdk/cli",
                 "--json")
    )  # fmt: skip
    assert {cli_task, new_id} <= {t["id"] for t in listed}
    assert all(t["status"] == "completed" for t in listed)


def test_conveyor_clone_refuses_bad_input_and_makes_nothing(
    plane: Plane, cli_task: str, tmp_path: Path
) -> None:
    env = agent_env(plane.server, tmp_path / "cli", tmp_path / "cache", "cli")

    def clone(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CONVEYOR), "clone", *args], env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    def count() -> int:
        return len(api_call(plane.server, "tasks.get_all", {"only_fields": ["id"]})["tasks"])

    before = count()
    bad_set = clone(cli_task, "--set", "lr=0.7")
    assert bad_set.returncode == 2 and "SECTION/NAME=VALUE" in bad_set.stderr
    no_queue = clone(cli_task, "--set", "Args/lr=1", "--queue", "no-such-queue")
    assert no_queue.returncode == 1 and "no-such-queue" in no_queue.stderr
    no_task = clone("0" * 32, "--queue", "default")
    assert no_task.returncode == 1 and "error:" in no_task.stderr
    no_model = clone(cli_task, "--input-model", "f" * 32)
    assert no_model.returncode == 1 and "error:" in no_model.stderr
    assert count() == before


def test_clearml_task_repo_and_docker_are_recorded(plane: Plane, tmp_path: Path) -> None:
    """`clearml-task --repo <git URL> --docker <image>`: the task records the repository, its
    commit, the entry point and the image (running it needs a docker agent: tests/docker)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(TRAIN)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, timeout=30)
    subprocess.run([*git, "add", "train.py"], check=True, timeout=30)
    subprocess.run([*git, "commit", "-q", "-m", "train"], check=True, timeout=30)
    task_id = clearml_task(
        plane, tmp_path, "--project", "sdk/cli", "--name", "from a repo", "--repo",
        repo.as_uri(), "--branch", "main", "--script", "train.py", "--args", "lr=0.4",
        "--docker", "python:3.11-slim", "--docker_args", "-e FOO=bar",
    )  # fmt: skip
    doc = api_call(plane.server, "tasks.get_by_id", {"task": task_id})["task"]
    assert doc["status"] == "created"
    assert doc["script"]["repository"] == repo.as_uri()
    assert doc["script"]["branch"] == "main"
    assert doc["script"]["entry_point"] == "train.py"
    assert doc["container"]["image"] == "python:3.11-slim"
    assert doc["container"]["arguments"] == "-e FOO=bar"
    assert doc["hyperparams"]["Args"]["lr"]["value"] == "0.4"
