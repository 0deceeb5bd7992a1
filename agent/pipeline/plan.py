"""Planning: a pure function from what the task records to what the agent will do.

``make_plan(task, settings, host, gpus)`` touches no disk, process or server: every decision
(which revision, which interpreter, which requirements, which argv and environment, which GPUs)
is a value that unit tests check directly. The stages carry the plan out.
"""

from __future__ import annotations

import dataclasses
import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.api.models import TaskSpec
from agent.config.settings import Settings
from agent.errors import StageError
from agent.pipeline.docker_plan import ContainerPlan, plan_container
from agent.pipeline.environment import EnvironmentRequest
from agent.pipeline.host import HostFacts, ServerAccess
from agent.pipeline.overrides import Overrides, imports_sdk, plan_overrides, requires_sdk
from agent.pipeline.source_request import SourceRequest

# Variables of the agent's own environment that must never reach a task: they would point the
# task's SDK at a stale parent task or leak the agent's configuration.
_SCRUBBED_PREFIXES = ("CONVEYOR_", "CLEARML_", "TRAINS_")
_SCRUBBED_NAMES = frozenset(
    {
        "VIRTUAL_ENV",
        "PYTHONHOME",
        "PYTHONPATH",
        "UV_PROJECT_ENVIRONMENT",
        # systemd's: a task must not notify (or feed the watchdog of) the agent's unit
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    }
)


# A clearml SDK script (clearml 2.1.12, after Task.init) swallows SIGTERM: the SDK's handler
# returns at once when the prior handler was the default, so SIGTERM alone leaves it running
# until SIGKILL. SIGINT becomes KeyboardInterrupt (the SDK restores Python's handler and calls
# it): the script unwinds, the SDK flushes at exit, the process ends in ~0.3 s. SIGTERM follows
# for the processes that do not handle SIGINT. (docs/operations.md, "Stopping a task")
SDK_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class Plan:
    task_id: str
    task_dir: Path
    source: SourceRequest
    environment: EnvironmentRequest
    entry: str  # script path relative to working_dir, or a module name when ``module``
    entry_args: tuple[str, ...]  # arguments after the entry point, Args overrides applied
    module: bool  # entry point is "-m package.module"
    overrides: Overrides
    env: Mapping[str, str] = field(default_factory=dict)  # added to the scrubbed agent env
    gpus: tuple[int, ...] = ()
    timeout: float | None = None
    grace: float = 10.0
    container: ContainerPlan | None = None  # docker mode: the container the task runs in

    @property
    def stop_signals(self) -> tuple[signal.Signals, ...]:
        """What ends the task's processes before the grace runs out (SIGKILL after it)."""
        return SDK_STOP_SIGNALS if self.overrides.sdk else (signal.SIGTERM,)

    def argv(self, python: Path, entry_point: Path | str) -> list[str]:
        """The command line, once the environment and source stages know the paths."""
        if self.module:
            return [str(python), "-u", "-m", str(entry_point), *self.entry_args]
        return [str(python), "-u", str(entry_point), *self.entry_args]


def make_plan(
    task: TaskSpec,
    settings: Settings,
    host: HostFacts,
    server: ServerAccess,
    gpus: Sequence[int] = (),
) -> Plan:
    """Decide everything about running ``task``; raise StageError for what cannot be run."""
    script = task.script
    entry, module, entry_args = split_entry_point(script.entry_point)
    if not script.repository and not script.is_literal_script:
        raise StageError("task has no repository and no script: nothing to run", stage="plan")
    if not entry and not script.is_literal_script:
        raise StageError("task has no entry point (script.entry_point is empty)", stage="plan")
    task_dir = settings.work_root / task.id
    source = SourceRequest(
        repository=script.repository,
        commit=script.version_num,
        branch=script.branch,
        tag=script.tag,
        diff=script.diff,
        entry_point=entry if not module else "",
        working_dir=script.working_dir or ".",
    )
    # In a container the image's Python is the default, not the agent's.
    default_python = "" if settings.docker else host.agent_python
    environment = EnvironmentRequest(
        python=script.binary or settings.python or default_python,
        requirements=script.requirements_pip,
        source_root=None,
        package_manager=settings.package_manager,
        extra_env=installer_env(settings),
    )
    env = task_env(task, settings, server, gpus)
    overrides = plan_overrides(
        task,
        entry_args,
        style=settings.args_style,
        sdk=_sdk_switch(settings.sdk_detection),
        reserved_env=env.keys(),
    )
    return Plan(
        task_id=task.id,
        task_dir=task_dir,
        source=source,
        environment=environment,
        entry=entry,
        entry_args=overrides.argv,
        module=module,
        overrides=overrides,
        env=env,
        gpus=tuple(gpus),
        timeout=settings.task_timeout or None,
        grace=settings.abort_grace,
        container=plan_container(task, settings, gpus) if settings.docker else None,
    )


def refine_for_source(
    plan: Plan, task: TaskSpec, settings: Settings, script_text: str, repo_requirements: str
) -> Plan:
    """Pure: once the source is checked out, a script that imports clearml (or a repository
    that requires it) applies its own Args, even when the task recorded no requirements."""
    if settings.sdk_detection != "auto" or plan.overrides.sdk:
        return plan
    if not (imports_sdk(script_text) or requires_sdk(repo_requirements)):
        return plan
    _, _, entry_args = split_entry_point(task.script.entry_point)
    overrides = plan_overrides(
        task, entry_args, style=settings.args_style, sdk=True, reserved_env=plan.env.keys()
    )
    return dataclasses.replace(plan, overrides=overrides, entry_args=overrides.argv)


def _sdk_switch(detection: str) -> bool | None:
    """``sdk_detection`` setting → ``plan_overrides``' ``sdk`` (None: detect)."""
    return {"always": True, "never": False}.get(detection)


def split_entry_point(entry_point: str) -> tuple[str, bool, tuple[str, ...]]:
    """``"train.py --x 1"`` → ``("train.py", False, ("--x", "1"))``; ``"-m pkg.mod"`` → module."""
    try:
        parts = shlex.split(entry_point.strip())
    except ValueError as exc:
        raise StageError(
            f"entry point {entry_point!r} cannot be parsed: {exc}", stage="plan"
        ) from exc
    if not parts:
        return "", False, ()
    if parts[0] == "-m":
        if len(parts) < 2:
            raise StageError("entry point '-m' names no module", stage="plan")
        return parts[1], True, tuple(parts[2:])
    return parts[0], False, tuple(parts[1:])


def installer_env(settings: Settings) -> dict[str, str]:
    """Environment for installers (uv/pip): the operator's extra CA bundle, if any."""
    if not settings.extra_ca_bundle:
        return {}
    bundle = settings.extra_ca_bundle
    return {
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "PIP_CERT": bundle,
        "CURL_CA_BUNDLE": bundle,
    }


def sdk_env(task_id: str, server: ServerAccess, worker_id: str) -> dict[str, str]:
    """What the clearml SDK inside the task needs to attach to its task (protocol doc)."""
    env = {
        "CLEARML_TASK_ID": task_id,
        "CLEARML_API_HOST": server.api_host,
        "CLEARML_WEB_HOST": server.web_host or server.api_host,
        "CLEARML_API_ACCESS_KEY": server.access_key,
        "CLEARML_API_SECRET_KEY": server.secret_key,
        "CLEARML_WORKER_ID": worker_id,
        "CLEARML_LOG_TASK_TO_BACKEND": "0",
        "CONVEYOR_TASK_ID": task_id,
    }
    if server.files_host:  # else the SDK derives it from the API host (ClearML's convention)
        env["CLEARML_FILES_HOST"] = server.files_host
    return env


def gpu_env(gpus: Sequence[int]) -> dict[str, str]:
    visible = ",".join(str(g) for g in gpus) if gpus else ""
    return {
        "CUDA_VISIBLE_DEVICES": visible,
        "NVIDIA_VISIBLE_DEVICES": visible or "none",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def task_env(
    task: TaskSpec, settings: Settings, server: ServerAccess, gpus: Sequence[int]
) -> dict[str, str]:
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    env.update(installer_env(settings))
    env.update(settings.extra_env)
    if task.output_destination:
        env["CONVEYOR_OUTPUT_URI"] = task.output_destination
    env.update(gpu_env(gpus))
    env.update(sdk_env(task.id, server, settings.effective_worker_id))
    return env


def scrub_agent_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment minus what must not leak into a task."""
    return {
        k: v
        for k, v in environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES
    }
