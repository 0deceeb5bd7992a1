"""Where a task's environment is built and its process runs: this host, or a container.

A :class:`Runtime` is chosen once, at start-up (``agent/worker/service.py``): :class:`HostRuntime`
(a venv per task, the process in its own session) or ``DockerRuntime`` (``agent/pipeline/
container.py``: the same environment logic inside the task's image, the process in a
container). It opens one :class:`Sandbox` per task; ``run.py`` tells the same story with both:

    async with runtime.sandbox(task_id) as sandbox:   # released after the task's report
        sandbox.prepare(...)  # the environment stage (blocking: in a worker thread)
        await sandbox.run(...)  # supervise

Nothing in the pipeline asks which one it has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.pipeline.console import Console
from agent.pipeline.environment import Environment, PreparedEnvironment
from agent.pipeline.plan import Plan, scrub_agent_env
from agent.pipeline.source_request import SourceResult
from agent.supervise.process import AbortSignal, ExitInfo, LineSink, describe, run_process


@dataclass(frozen=True)
class Ending:
    """How a task's process ended, and what the sandbox knows beyond the exit status."""

    exit: ExitInfo
    cause: str = ""  # e.g. "out of memory (limit 2g)": the failure reason when it failed

    def describe(self) -> str:
        return self.cause or describe(self.exit)


class Sandbox(Protocol):
    def prepare(self, plan: Plan, source: SourceResult, console: Console) -> PreparedEnvironment:
        """The environment stage (blocking: called in a worker thread)."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        sink: LineSink,
        abort: AbortSignal,
        grace: float,
        timeout: float | None,
        on_start: Callable[[int], None],
        stop_signals: Sequence[signal.Signals] = (signal.SIGTERM,),
    ) -> Ending:
        """Run the task's process to its end: ``env`` is the task's own variables (the plan's),
        the sandbox adds its base (PATH with the venv first...). An abort or timeout sends
        ``stop_signals`` (in order), then SIGKILL after ``grace``."""


class Runtime(Protocol):
    def sandbox(self, task_id: str) -> contextlib.AbstractAsyncContextManager[Sandbox]:
        """The sandbox of one task, released (its container removed) when the block ends."""


class HostRuntime:
    """Tasks in a venv on this host (:class:`~agent.pipeline.environment.VenvEnvironment`)."""

    def __init__(self, environment: Environment, cache_dir: Path) -> None:
        self.environment = environment
        self.cache_dir = cache_dir

    @contextlib.asynccontextmanager
    async def sandbox(self, task_id: str) -> AsyncIterator[HostSandbox]:
        yield HostSandbox(self)  # nothing to release: the work dir is the pipeline's


class HostSandbox:
    def __init__(self, runtime: HostRuntime) -> None:
        self.runtime = runtime
        self.prepared: PreparedEnvironment | None = None

    def prepare(self, plan: Plan, source: SourceResult, console: Console) -> PreparedEnvironment:
        request = dataclasses.replace(plan.environment, source_root=source.root)
        self.prepared = self.runtime.environment.prepare(
            request, task_dir=plan.task_dir, cache_dir=self.runtime.cache_dir, console=console
        )
        return self.prepared

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        sink: LineSink,
        abort: AbortSignal,
        grace: float,
        timeout: float | None,
        on_start: Callable[[int], None],
        stop_signals: Sequence[signal.Signals] = (signal.SIGTERM,),
    ) -> Ending:
        assert self.prepared is not None, "prepare() first"
        venv = self.prepared.venv
        process_env = {**scrub_agent_env(os.environ), **env}
        process_env["PATH"] = f"{venv / 'bin'}{os.pathsep}{process_env.get('PATH', '')}"
        process_env["VIRTUAL_ENV"] = str(venv)
        exit_info = await run_process(
            argv,
            cwd=cwd,
            env=process_env,
            sink=sink,
            abort=abort,
            grace=grace,
            timeout=timeout,
            on_start=on_start,
            stop_signals=stop_signals,
        )
        return Ending(exit_info)
