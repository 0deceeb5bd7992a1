"""Docker mode planning (pure): container arguments through the allow list, image, GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.api.models import TaskSpec
from agent.config.errors import SettingsError
from agent.config.settings import DEFAULT_DOCKER_ARGS, Settings, load_settings
from agent.errors import StageError
from agent.pipeline.docker_plan import (
    LABEL_TASK,
    LABEL_WORKER,
    ArgsPolicy,
    Volume,
    container_gpu_env,
    parse_container_args,
    plan_container,
)
from agent.pipeline.host import HostFacts, ServerAccess
from agent.pipeline.plan import make_plan

DEFAULT = ArgsPolicy.from_settings(Settings())
HOST = HostFacts(hostname="box", gpu_count=2, agent_python="3.11")
SERVER = ServerAccess("http://127.0.0.1:9", "", "", "KEY", "SECRET")


def _task(container: dict[str, str] | None = None, docker_cmd: str = "") -> TaskSpec:
    return TaskSpec.parse(
        {
            "id": "t1",
            "script": {"diff": "print(1)\n", "entry_point": "a.py"},
            "container": container or {},
            "execution": {"docker_cmd": docker_cmd},
        }
    )


def test_allowed_arguments_become_sdk_options() -> None:
    options = parse_container_args(
        "--ipc=host --shm-size 8g -e A=1 --env B=two=2 -eC= --memory=2g --memory-swap -1 "
        "--cpus 1.5 --ulimit nofile=1024:2048 -l team=vision --rm -it --init",
        DEFAULT,
    )
    assert options.kwargs == {
        "ipc_mode": "host",
        "shm_size": "8g",
        "mem_limit": "2g",
        "memswap_limit": "-1",
        "nano_cpus": 1_500_000_000,
        "ulimits": [{"name": "nofile", "soft": 1024, "hard": 2048}],
    }
    assert options.environment == {"A": "1", "B": "two=2", "C": ""}
    assert options.labels == {"team": "vision"}
    assert options.memory == "2g"
    assert not options.run_as_is


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ("--privileged", "'--privileged' refused: not in this agent's docker_allowed_args"),
        ("--pid=host", "'--pid=host' refused: not in this agent's docker_allowed_args"),
        ("--cap-add SYS_ADMIN", "'--cap-add' refused"),
        ("--device /dev/sda", "'--device' refused"),
        ("-v /etc:/host-etc", "/etc is outside docker_volume_roots (none configured)"),
        ("-p 8080:80", "'-p' refused: not an option this agent supports"),
        ("--memory lots", "'--memory=lots' refused: not a size"),
        ("-e NAME", "give NAME=value"),
        ("-e 1X=2", "is not a variable name"),
        ("--ipc=weird", "use one of host, none, private, shareable"),
        ("--cpus 0", "not a positive number"),
        ("--shm-size", "'--shm-size' refused: needs a value"),
        ("--run-as-is=yes", "takes no value"),
        ("--label conveyor.task=x", "are the agent's"),
        ("bash -c x", "'bash' refused: not an option"),
        ("--env 'A=1", "cannot be parsed"),
    ],
)
def test_refused_arguments_fail_with_a_reason_naming_them(arguments: str, reason: str) -> None:
    with pytest.raises(StageError) as caught:
        parse_container_args(arguments, DEFAULT)
    assert reason in caught.value.reason
    assert caught.value.reason.startswith("container argument")


def test_dangerous_arguments_say_why() -> None:
    with pytest.raises(StageError, match="full control of the host"):
        parse_container_args("--privileged", DEFAULT)


def test_the_operator_can_allow_more() -> None:
    policy = ArgsPolicy(frozenset({"--privileged", "--pid", "--device"}))
    options = parse_container_args("--privileged --pid=host --device /dev/fuse", policy)
    assert options.kwargs == {"privileged": True, "pid_mode": "host", "devices": ["/dev/fuse"]}
    with pytest.raises(StageError, match="docker_allowed_args"):
        parse_container_args("--ipc=host", policy)  # and allow less


def test_short_names_in_the_allow_list_mean_the_long_ones() -> None:
    settings = Settings(docker_allowed_args=("-e", "-m"))
    options = parse_container_args("--env A=1 -m 1g", ArgsPolicy.from_settings(settings))
    assert options.environment == {"A": "1"}
    assert options.kwargs == {"mem_limit": "1g"}


def test_volumes_only_from_configured_roots() -> None:
    policy = ArgsPolicy(frozenset({"--volume"}), volume_roots=("/data", "/mnt/shared/"))
    options = parse_container_args("-v /data/sets:/sets:ro --volume=/mnt/shared:/out", policy)
    assert options.volumes == (
        Volume("/data/sets", "/sets", read_only=True),
        Volume("/mnt/shared", "/out", read_only=False),
    )
    for bad in ("/data/../etc:/x", "/database:/x", "data:/x", "/data:/x:z", "/data"):
        with pytest.raises(StageError, match="container argument"):
            parse_container_args(f"-v {bad}", policy)


def test_run_as_is_from_the_task_or_the_agent() -> None:
    assert parse_container_args("--run-as-is", DEFAULT).run_as_is
    settings = Settings(docker=True, docker_image="base:1", docker_run_as_is=True)
    assert plan_container(_task(), settings, ()).run_as_is
    assert not plan_container(_task(), Settings(docker_image="base:1"), ()).run_as_is
    assert plan_container(_task({"arguments": "--run-as-is"}), settings, ()).run_as_is


def test_image_from_the_task_then_legacy_docker_cmd_then_the_default() -> None:
    settings = Settings(docker=True, docker_image="default:1", worker_id="w")
    assert plan_container(_task({"image": "mine:2"}), settings, ()).image == "mine:2"
    legacy = plan_container(_task(docker_cmd="legacy:3 --ipc=host"), settings, ())
    assert legacy.image == "legacy:3"
    assert legacy.options.kwargs == {"ipc_mode": "host"}
    plan = plan_container(_task(), settings, ())
    assert plan.image == "default:1"
    assert plan.labels == {LABEL_WORKER: "w", LABEL_TASK: "t1"}
    assert plan.network == "host"
    with pytest.raises(StageError, match="no container image"):
        plan_container(_task(), Settings(docker=True), ())


def test_gpus_are_renumbered_inside_the_container() -> None:
    assert container_gpu_env((2, 3)) == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "NVIDIA_VISIBLE_DEVICES": "2,3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    assert container_gpu_env(())["NVIDIA_VISIBLE_DEVICES"] == "none"
    plan = plan_container(
        _task({"setup_shell_script": "echo hi"}), Settings(docker_image="b"), (1,)
    )
    assert plan.gpus == (1,)
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert plan.setup_script == "echo hi"


def test_make_plan_plans_a_container_only_in_docker_mode(tmp_path: Path) -> None:
    task = _task({"image": "img:1", "arguments": "--privileged"})
    assert make_plan(task, Settings(data_dir=tmp_path), HOST, SERVER).container is None
    with pytest.raises(StageError, match="--privileged"):
        make_plan(task, Settings(data_dir=tmp_path, docker=True), HOST, SERVER)
    ok = make_plan(_task({"image": "img:1"}), Settings(docker=True), HOST, SERVER, gpus=(1,))
    assert ok.container is not None and ok.container.image == "img:1"
    # Which Python the image has is the image's business: no host default is imposed.
    assert ok.environment.python == ""


def test_default_allow_list_is_the_documented_one() -> None:
    assert "--privileged" not in DEFAULT_DOCKER_ARGS
    assert {"--env", "--ipc", "--shm-size", "--memory", "--cpus"} <= set(DEFAULT_DOCKER_ARGS)


def test_docker_settings_from_the_environment(tmp_path: Path) -> None:
    environ = {
        "CONVEYOR_CONFIG": str(tmp_path / "none.toml"),
        "CONVEYOR_DOCKER": "1",
        "CONVEYOR_DOCKER_PULL": "never",
        "CONVEYOR_DOCKER_ALLOWED_ARGS": "--env,--ipc --privileged",
        "CONVEYOR_DOCKER_VOLUME_ROOTS": "/data,/mnt",
    }
    (tmp_path / "none.toml").write_text("")
    settings = load_settings(environ=environ)
    assert settings.docker and settings.docker_pull == "never"
    assert settings.docker_allowed_args == ("--env", "--ipc", "--privileged")
    assert settings.docker_volume_roots == ("/data", "/mnt")
    with pytest.raises(SettingsError, match="docker_pull"):
        load_settings(environ={**environ, "CONVEYOR_DOCKER_PULL": "sometimes"})
