"""A task's holding container, described (pure): its name, mounts, GPUs, labels, environment and
the holding command that waits for the environment to be built in it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest, LogConfig, Mount

from agent.config.settings import Settings
from agent.pipeline.docker_env import UV_IN_CONTAINER
from agent.pipeline.docker_plan import ContainerPlan
from agent.pipeline.environment import UV_CACHE
from agent.pipeline.plan import Plan

GO_FIFO = "go"
TASK_SCRIPT = "task.sh"
MODELS_DIR = "models"  # under cache_dir: the input model cache (agent/worker/service.py)
# The container's first process: wait for the agent's word, then become the task.
HOLD = 'read -r _ < "$0" && exec /bin/sh "$1"'
LOG_MAX_SIZE = "20m"  # docker's own copy of the output (the task's log goes to the server)
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_.-]+")


def container_name(task_id: str) -> str:
    return f"conveyor-{_NAME_CHARS.sub('-', task_id)[:40]}-{os.urandom(3).hex()}"


def create_args(
    plan: Plan,
    cplan: ContainerPlan,
    image_id: str,
    settings: Settings,
    uv: Path,
    control: Path,
) -> dict[str, Any]:
    """Pure: the ``containers.create`` arguments of a task's holding container."""
    task_dir = str(plan.task_dir.absolute())
    uv_cache = str(settings.cache_dir.absolute() / UV_CACHE)
    models = str(settings.cache_dir.absolute() / MODELS_DIR)
    mounts = [
        Mount(task_dir, task_dir, type="bind"),
        Mount(uv_cache, uv_cache, type="bind"),
        Mount(UV_IN_CONTAINER, str(uv), type="bind", read_only=True),
        Mount(models, models, type="bind", read_only=True),  # input models
    ]
    if settings.extra_ca_bundle:
        bundle = str(Path(settings.extra_ca_bundle).absolute())
        mounts.append(Mount(bundle, bundle, type="bind", read_only=True))
    for volume in cplan.options.volumes:
        mounts.append(Mount(volume.target, volume.source, type="bind", read_only=volume.read_only))
    gpus = [DeviceRequest(device_ids=[str(g) for g in cplan.gpus], capabilities=[["gpu"]])]
    return {
        **cplan.options.kwargs,
        "image": image_id,
        "command": ["/bin/sh", "-c", HOLD, str(control / GO_FIFO), str(control / TASK_SCRIPT)],
        "name": container_name(plan.task_id),
        "labels": dict(cplan.labels),
        "environment": {**plan.env, **cplan.env},
        "mounts": mounts,
        "network_mode": cplan.network,
        "init": True,  # docker's init as PID 1: signals reach the task, zombies are reaped
        "device_requests": gpus if cplan.gpus else None,
        "log_config": LogConfig(type="json-file", config={"max-size": LOG_MAX_SIZE}),
        "working_dir": task_dir,
        "stdin_open": False,
        "tty": False,
    }
