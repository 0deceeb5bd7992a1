"""The holding container's creation arguments (pure: no engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.api.models import TaskSpec
from agent.config.settings import Settings
from agent.pipeline.docker_create import HOLD, create_args
from agent.pipeline.docker_env import UV_IN_CONTAINER
from agent.pipeline.host import HostFacts, ServerAccess
from agent.pipeline.plan import make_plan

HOST = HostFacts(hostname="box", gpu_count=4, agent_python="3.11")
SERVER = ServerAccess("http://127.0.0.1:9", "", "", "KEY", "SECRET")
UV = Path("/opt/agent/bin/uv")


def _args(tmp_path: Path, gpus: tuple[int, ...] = (), **container: str) -> dict[str, Any]:
    settings = Settings(
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        worker_id="w1",
        docker=True,
        docker_image="base:1",
        docker_volume_roots=("/data",),
        extra_ca_bundle="/etc/ca.pem",
        extra_env={"HTTPS_PROXY": "http://proxy:3128"},
    )
    task = TaskSpec.parse(
        {
            "id": "t1",
            "script": {"diff": "print(1)\n", "entry_point": "a.py"},
            "container": container,
        }
    )
    plan = make_plan(task, settings, HOST, SERVER, gpus)
    assert plan.container is not None
    return create_args(plan, plan.container, "sha256:abc", settings, UV, plan.task_dir / "ctl")


def _mounts(args: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {m["Target"]: (m["Source"], m["ReadOnly"]) for m in args["mounts"]}


def test_mounts_env_labels_and_init(tmp_path: Path) -> None:
    args = _args(tmp_path, arguments="--shm-size 8g -e A=1 -v /data/sets:/sets:ro")
    task_dir = str(tmp_path / "data" / "work" / "t1")
    uv_cache = str(tmp_path / "cache" / "uv")
    models = str(tmp_path / "cache" / "models")
    assert _mounts(args) == {
        task_dir: (task_dir, False),  # checkout, venv, config files: at the host's path
        uv_cache: (uv_cache, False),
        UV_IN_CONTAINER: (str(UV), True),
        models: (models, True),
        "/etc/ca.pem": ("/etc/ca.pem", True),
        "/sets": ("/data/sets", True),
    }
    assert args["image"] == "sha256:abc"
    assert args["init"] is True
    assert args["network_mode"] == "host"
    assert args["shm_size"] == "8g"
    assert args["labels"] == {"conveyor.worker": "w1", "conveyor.task": "t1"}
    assert args["command"][:3] == ["/bin/sh", "-c", HOLD]
    env = args["environment"]
    assert env["A"] == "1" and env["CLEARML_TASK_ID"] == "t1"
    assert env["SSL_CERT_FILE"] == "/etc/ca.pem"  # the bundle is mounted at that path
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "none"
    assert args["device_requests"] is None  # no GPUs: no device request at all


def test_gpus_become_a_device_request(tmp_path: Path) -> None:
    args = _args(tmp_path, gpus=(2, 3))
    (request,) = args["device_requests"]
    assert request["DeviceIDs"] == ["2", "3"]
    assert request["Capabilities"] == [["gpu"]]
    assert args["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert args["environment"]["NVIDIA_VISIBLE_DEVICES"] == "2,3"
