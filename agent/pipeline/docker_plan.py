"""Docker mode, planned: which image, which container options, which GPUs and labels.

Pure: :func:`plan_container` turns the task's ``container`` section and the agent's settings into
a :class:`ContainerPlan`; nothing here talks to the engine. A task asks for container options
with ``container.arguments`` (``docker run`` syntax, e.g. ``--ipc=host --shm-size 8g -e A=1``).
Each one passes through the operator's allow list (``docker_allowed_args``) and is translated
into docker SDK keyword arguments; anything else fails the task before any container exists,
with a reason that names the argument ("container argument '--privileged' refused: ...").

``--run-as-is`` is Conveyor's own: no environment step, the image's Python runs the entry point.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.api.models import TaskSpec
from agent.config.settings import Settings
from agent.errors import StageError

STAGE = "plan"
RUN_AS_IS = "--run-as-is"
LABEL_WORKER = "conveyor.worker"  # the agent's worker id: its leftovers are found by this
LABEL_TASK = "conveyor.task"
LABEL_PREFIX = "conveyor."
NANO = 1_000_000_000
# Spellings people copy from `docker run` lines that mean nothing here (we never attach a
# terminal, always run detached, always use an init process and always remove the container).
NO_OPS = frozenset(
    {"--rm", "-i", "-t", "-it", "-ti", "-d", "--interactive", "--tty", "--detach", "--init"}
)
SHORT = {"-e": "--env", "-m": "--memory", "-v": "--volume", "-l": "--label", "-u": "--user"}
# Why an argument that an operator has not allowed is dangerous, for the failure reason.
DANGERS = {
    "--privileged": "it gives the task full control of the host",
    "--pid": "it can expose the host's processes",
    "--cap-add": "it widens the kernel privileges of the task",
    "--device": "it exposes host devices",
    "--security-opt": "it can switch off the task's confinement",
    "--volume": "it mounts host directories",
    "--network": "it changes the task's network",
    "--user": "it changes the user the task runs as",
}
_SIZE = re.compile(r"^\d+(\.\d+)?[bkmgBKMG]?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IPC_MODES = frozenset({"none", "private", "shareable", "host"})
_ULIMIT = re.compile(r"^(?P<name>[a-z]+)=(?P<soft>-?\d+)(?::(?P<hard>-?\d+))?$")
_VOLUME_MODES = frozenset({"ro", "rw"})


@dataclass(frozen=True)
class Volume:
    source: str  # absolute host path
    target: str  # absolute path in the container
    read_only: bool = False


@dataclass(frozen=True)
class ContainerOptions:
    """What a task's ``container.arguments`` asked for, once allowed and translated."""

    kwargs: Mapping[str, Any] = field(default_factory=dict)  # docker SDK ``containers.create``
    environment: Mapping[str, str] = field(default_factory=dict)
    volumes: tuple[Volume, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    memory: str = ""  # the --memory limit as written ("2g"), for the out-of-memory reason
    run_as_is: bool = False


@dataclass(frozen=True)
class ArgsPolicy:
    allowed: frozenset[str]  # canonical long names ("--env", not "-e")
    volume_roots: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ArgsPolicy:
        allowed = frozenset(SHORT.get(name, name) for name in settings.docker_allowed_args)
        return cls(allowed=allowed, volume_roots=settings.docker_volume_roots)


@dataclass(frozen=True)
class ContainerPlan:
    image: str
    options: ContainerOptions
    run_as_is: bool
    pull: str  # "missing" | "always" | "never"
    network: str
    gpus: tuple[int, ...]  # host GPU indices handed to the container (a DeviceRequest)
    labels: Mapping[str, str]
    env: Mapping[str, str]  # on top of the plan's env: GPU numbering as the container sees it
    setup_script: str = ""  # the task's container.setup_shell_script


def plan_container(task: TaskSpec, settings: Settings, gpus: Sequence[int]) -> ContainerPlan:
    """The container ``task`` runs in on this agent; StageError for what may not run."""
    image = task.container.image.strip() or settings.docker_image.strip()
    if not image:
        raise StageError(
            "task names no container image and this agent has no default (docker_image)",
            stage=STAGE,
        )
    options = parse_container_args(task.container.arguments, ArgsPolicy.from_settings(settings))
    labels = {**options.labels, LABEL_WORKER: settings.effective_worker_id, LABEL_TASK: task.id}
    return ContainerPlan(
        image=image,
        options=options,
        run_as_is=options.run_as_is or settings.docker_run_as_is,
        pull=settings.docker_pull,
        network=str(options.kwargs.get("network_mode", settings.docker_network)),
        gpus=tuple(gpus),
        labels=labels,
        env={**options.environment, **container_gpu_env(gpus)},
        setup_script=task.container.setup_shell_script,
    )


def container_gpu_env(gpus: Sequence[int]) -> dict[str, str]:
    """Inside the container the allocated GPUs are numbered from 0; the NVIDIA runtime still
    selects them by host index (and "none" keeps an image's ``=all`` from exposing every GPU)."""
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpus))),
        "NVIDIA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus) or "none",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


# --- container.arguments -----------------------------------------------------------------------


class _Builder:
    """Collects translated options; one method per kind of value."""

    def __init__(self, policy: ArgsPolicy) -> None:
        self.policy = policy
        self.kwargs: dict[str, Any] = {}
        self.environment: dict[str, str] = {}
        self.volumes: list[Volume] = []
        self.labels: dict[str, str] = {}
        self.memory = ""
        self.run_as_is = False

    def build(self) -> ContainerOptions:
        return ContainerOptions(
            kwargs=self.kwargs,
            environment=self.environment,
            volumes=tuple(self.volumes),
            labels=self.labels,
            memory=self.memory,
            run_as_is=self.run_as_is,
        )

    def append(self, key: str, value: Any) -> None:
        self.kwargs.setdefault(key, []).append(value)


Handler = Callable[[_Builder, str, str], None]  # (builder, option, value)


def _size(key: str) -> Handler:
    def handle(b: _Builder, option: str, value: str) -> None:
        if not (_SIZE.match(value) or (option == "--memory-swap" and value == "-1")):
            raise _refused(option, value, "not a size like 512m or 8g")
        b.kwargs[key] = value
        if option == "--memory":
            b.memory = value

    return handle


def _env(b: _Builder, option: str, value: str) -> None:
    name, eq, text = value.partition("=")
    if not eq:
        raise _refused(option, value, "give NAME=value (the agent's own environment is not passed)")
    if not _ENV_NAME.match(name):
        raise _refused(option, value, f"{name!r} is not a variable name")
    b.environment[name] = text


def _ipc(b: _Builder, option: str, value: str) -> None:
    if value not in _IPC_MODES:
        raise _refused(option, value, "use one of " + ", ".join(sorted(_IPC_MODES)))
    b.kwargs["ipc_mode"] = value


def _cpus(b: _Builder, option: str, value: str) -> None:
    try:
        cpus = float(value)
    except ValueError:
        cpus = 0.0
    if not cpus > 0:
        raise _refused(option, value, "not a positive number of CPUs")
    b.kwargs["nano_cpus"] = round(cpus * NANO)


def _ulimit(b: _Builder, option: str, value: str) -> None:
    match = _ULIMIT.match(value)
    if not match:
        raise _refused(option, value, "give name=soft[:hard], e.g. nofile=65536:65536")
    soft = int(match["soft"])
    hard = int(match["hard"]) if match["hard"] is not None else soft
    b.append("ulimits", {"name": match["name"], "soft": soft, "hard": hard})


def _volume(b: _Builder, option: str, value: str) -> None:
    parts = value.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in _VOLUME_MODES):
        raise _refused(option, value, "give /host/path:/container/path[:ro]")
    source, target = posixpath.normpath(parts[0]), posixpath.normpath(parts[1])
    if not parts[0].startswith("/") or not parts[1].startswith("/"):
        raise _refused(option, value, "both paths must be absolute (named volumes are not used)")
    if not any(_inside(source, root) for root in b.policy.volume_roots):
        roots = ", ".join(b.policy.volume_roots) or "none configured"
        raise _refused(option, value, f"{source} is outside docker_volume_roots ({roots})")
    b.volumes.append(Volume(source, target, read_only=len(parts) == 3 and parts[2] == "ro"))


def _label(b: _Builder, option: str, value: str) -> None:
    key, _, text = value.partition("=")
    if not key or key.startswith(LABEL_PREFIX):
        raise _refused(option, value, f"labels starting with {LABEL_PREFIX!r} are the agent's")
    b.labels[key] = text


def _text(key: str, many: bool = False) -> Handler:
    def handle(b: _Builder, option: str, value: str) -> None:
        if not value:
            raise _refused(option, value, "needs a value")
        if many:
            b.append(key, value)
        else:
            b.kwargs[key] = value

    return handle


def _flag(key: str) -> Handler:
    def handle(b: _Builder, option: str, value: str) -> None:
        b.kwargs[key] = True

    return handle


def _run_as_is(b: _Builder, option: str, value: str) -> None:
    b.run_as_is = True


# option → (takes a value, handler). Only these can ever be translated; the allow list decides
# which of them a task may use.
OPTIONS: dict[str, tuple[bool, Handler]] = {
    "--env": (True, _env),
    "--ipc": (True, _ipc),
    "--shm-size": (True, _size("shm_size")),
    "--memory": (True, _size("mem_limit")),
    "--memory-swap": (True, _size("memswap_limit")),
    "--memory-reservation": (True, _size("mem_reservation")),
    "--cpus": (True, _cpus),
    "--ulimit": (True, _ulimit),
    "--volume": (True, _volume),
    "--label": (True, _label),
    "--user": (True, _text("user")),
    "--network": (True, _text("network_mode")),
    "--pid": (True, _text("pid_mode")),
    "--cap-add": (True, _text("cap_add", many=True)),
    "--device": (True, _text("devices", many=True)),
    "--security-opt": (True, _text("security_opt", many=True)),
    "--privileged": (False, _flag("privileged")),
    RUN_AS_IS: (False, _run_as_is),
}


def parse_container_args(arguments: str, policy: ArgsPolicy) -> ContainerOptions:
    """``container.arguments`` → options; StageError naming the first refused argument."""
    try:
        tokens = shlex.split(arguments)
    except ValueError as exc:
        raise StageError(
            f"container arguments {arguments!r} cannot be parsed: {exc}", stage=STAGE
        ) from exc
    builder = _Builder(policy)
    rest = list(tokens)
    while rest:
        token = rest.pop(0)
        if token in NO_OPS:
            continue
        option, value = _split(token, rest)
        _allow(option, value, policy)
        takes_value, handler = OPTIONS[option]
        if takes_value and value is None:
            if not rest:
                raise _refused(option, "", "needs a value")
            value = rest.pop(0)
        elif not takes_value and value is not None:
            raise _refused(option, value, "takes no value")
        handler(builder, option, value or "")
    return builder.build()


def _split(token: str, rest: Sequence[str]) -> tuple[str, str | None]:
    """``--name=value`` / ``--name`` / ``-e`` / ``-eNAME=1`` → (canonical option, inline value)."""
    if token.startswith("--"):
        name, eq, value = token.partition("=")
        return name, value if eq else None
    if token.startswith("-") and len(token) >= 2:
        short, attached = token[:2], token[2:]
        canonical = SHORT.get(short, short)
        if attached.startswith("="):
            attached = attached[1:]
        return canonical, attached or None
    raise StageError(
        f"container argument {token!r} refused: not an option (the image comes from "
        "container.image, the command from the task's script)",
        stage=STAGE,
    )


def _allow(option: str, value: str | None, policy: ArgsPolicy) -> None:
    shown = option if value is None else f"{option}={value}"
    if option not in OPTIONS:
        raise StageError(
            f"container argument {shown!r} refused: not an option this agent supports "
            "(docs/docker.md lists them)",
            stage=STAGE,
        )
    if option not in policy.allowed:
        why = DANGERS.get(option, "")
        raise StageError(
            f"container argument {shown!r} refused: not in this agent's docker_allowed_args"
            + (f" ({why})" if why else ""),
            stage=STAGE,
        )


def _refused(option: str, value: str, why: str) -> StageError:
    shown = f"{option}={value}" if value else option
    return StageError(f"container argument {shown!r} refused: {why}", stage=STAGE)


def _inside(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    return root.startswith("/") and (path == root or path.startswith(root.rstrip("/") + "/"))
