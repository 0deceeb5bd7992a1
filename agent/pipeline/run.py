"""The story of one task: plan → source → environment → supervise → report.

Every stage writes what it does into the task's console ("source: … (cache hit)"), fails with a
``StageError`` whose reason becomes the task's ``status_reason``, and checks the abort watch
between steps. Whatever happens, the task ends with an honest final status and every console
line is delivered (or left in the spool for the next start when the server is down).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import structlog

from agent.api.client import ApiClient
from agent.api.errors import ApiError
from agent.api.models import TaskDocumentError, TaskSpec
from agent.config.settings import Settings
from agent.errors import StageError
from agent.pipeline.abort import AbortWatch
from agent.pipeline.environment import PreparedEnvironment
from agent.pipeline.host import HostFacts, ServerAccess
from agent.pipeline.models import ModelCache, fetch_input_models
from agent.pipeline.overrides import apply_overrides, expand_references
from agent.pipeline.plan import Plan, make_plan, refine_for_source
from agent.pipeline.report import Outcome, report
from agent.pipeline.sandbox import Ending, Runtime, Sandbox
from agent.pipeline.source import prepare_source
from agent.pipeline.source_request import GitCredentials, SourceResult, sdk_hints
from agent.supervise.logs import LogShipper, TaskConsole
from agent.supervise.metrics import TaskMonitor
from agent.supervise.process import ExitInfo, describe

log = structlog.get_logger()
P = ParamSpec("P")
R = TypeVar("R")


class Aborted(Exception):
    """The abort watch tripped while a stage was running."""


@dataclass(frozen=True)
class TaskContext:
    """What every task run shares; built once by the daemon (or ``conveyor execute``)."""

    settings: Settings
    api: ApiClient  # finite retries: status calls
    shipping_api: ApiClient  # retries forever: log delivery
    host: HostFacts
    server: ServerAccess
    runtime: Runtime  # where environments are built and tasks run: this host or containers
    models: ModelCache
    keep_work_dir: bool = False


async def run_task(
    ctx: TaskContext, task_id: str, worker_id: str, gpus: tuple[int, ...], shutdown: asyncio.Event
) -> Outcome:
    """Run a claimed task to its end and report it. Never raises for a task's own failure."""
    structlog.contextvars.bind_contextvars(task_id=task_id)
    # Every line is delivered before the final status, however long the server is away (a
    # killed agent leaves the spool on disk for its next start).
    shipper = LogShipper(
        ctx.shipping_api, task_id, worker_id, ctx.settings.spool_dir, close_timeout=None
    )
    console = TaskConsole(shipper)
    # The sandbox is released (a container removed) after the report: it never delays it.
    async with ctx.runtime.sandbox(task_id) as sandbox:
        try:
            async with shipper:
                watch = AbortWatch(ctx.api, task_id, shutdown, ctx.settings.abort_poll_interval)
                async with watch:
                    outcome = await _run_stages(ctx, task_id, gpus, sandbox, console, watch)
                console.info(_final_line(outcome))
        except OSError as exc:  # the spool could not be written (disk full...): still report
            outcome = Outcome.failed(f"agent could not spool the task's log: {exc}")
            log.error("spool failure", error=str(exc))
        # The final status must arrive even through a server outage: the forever-retrying client.
        await report(ctx.shipping_api, task_id, outcome)
    await asyncio.to_thread(_clean_up, ctx, task_id)  # rmtree and cache eviction block
    structlog.contextvars.unbind_contextvars("task_id")
    return outcome


async def _run_stages(
    ctx: TaskContext,
    task_id: str,
    gpus: tuple[int, ...],
    sandbox: Sandbox,
    console: TaskConsole,
    watch: AbortWatch,
) -> Outcome:
    try:
        spec = await ctx.api.get_task(task_id)
        plan = make_plan(spec, ctx.settings, ctx.host, ctx.server, gpus)
        console.info(f"task {spec.name!r} ({task_id}) on {ctx.host.hostname}, gpus: {_gpus(gpus)}")
        source = await _stage(watch, _prepare_source, ctx, plan, console)
        plan = refine_for_source(plan, spec, ctx.settings, *sdk_hints(source))
        plan.overrides.report(console)
        models = asyncio.ensure_future(fetch_input_models(ctx.api, spec, ctx.models, console))
        try:  # input models download while the environment is built
            env = await _stage(watch, sandbox.prepare, plan, source, console)
            model_env = await models
        finally:
            models.cancel()
        await _record(ctx.api, spec, source, env)
        ending = await _supervise(ctx.api, plan, source, env, model_env, sandbox, console, watch)
        return judge(ending.exit, ending.cause)
    except TaskDocumentError as exc:
        console.error(f"malformed task document: {exc}")
        return Outcome.failed(f"malformed task document: {exc}")
    except StageError as exc:
        console.error(exc.reason)
        return Outcome.failed(exc.reason)
    except Aborted:
        return Outcome.stopped(watch.reason or "aborted")


async def _stage(watch: AbortWatch, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a blocking stage in a thread; give up waiting for it if the task is aborted."""
    if watch.tripped:
        raise Aborted
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    abort = asyncio.ensure_future(watch.event.wait())
    await asyncio.wait([work, abort], return_when=asyncio.FIRST_COMPLETED)
    abort.cancel()
    if not work.done():
        # Threads cannot be cancelled: the stage finishes in the background and its result is
        # discarded; its files are removed with the task's work dir.
        raise Aborted
    return work.result()


def _prepare_source(ctx: TaskContext, plan: Plan, console: TaskConsole) -> SourceResult:
    settings = ctx.settings
    credentials = (
        GitCredentials(settings.git_user, settings.git_pass) if settings.git_pass else None
    )
    return prepare_source(
        plan.source,
        task_dir=plan.task_dir,
        mirror_root=settings.cache_dir / "git",
        console=console,
        credentials=credentials,
    )


async def _record(
    api: ApiClient, spec: TaskSpec, source: SourceResult, env: PreparedEnvironment
) -> None:
    """Tell the server what was actually used: frozen requirements, resolved commit."""
    try:
        await api.set_requirements(spec.id, env.frozen, spec.script.requirements_pip)
        if source.commit and not spec.script.version_num:
            await api.edit_task(spec.id, {"script": {"version_num": source.commit}})
    except ApiError as exc:
        log.warning("could not record the environment on the task", error=str(exc))


async def _supervise(
    api: ApiClient,
    plan: Plan,
    source: SourceResult,
    env: PreparedEnvironment,
    model_env: dict[str, str],
    sandbox: Sandbox,
    console: TaskConsole,
    watch: AbortWatch,
) -> Ending:
    if watch.tripped:
        raise Aborted
    entry: Path | str = plan.entry if plan.module else source.entry_point
    extra_env = {**model_env, **apply_overrides(plan.overrides, plan.task_dir)}
    argv = list(expand_references(plan.argv(env.python, entry), extra_env))
    console.info(f"starting {' '.join(argv[2:])} in {source.cwd}")
    started = time.monotonic()
    async with TaskMonitor(api, plan.task_id) as monitor:
        ending = await sandbox.run(
            argv,
            cwd=source.cwd,
            env={**plan.env, **extra_env},
            sink=console.shipper,
            abort=watch,
            grace=plan.grace,
            timeout=plan.timeout,
            on_start=monitor.attach,
        )
    console.info(f"process ended after {time.monotonic() - started:.1f} s: {ending.describe()}")
    return ending


def judge(exit_info: ExitInfo, cause: str = "") -> Outcome:
    """Pure: the task's final status from how its process ended (``cause``: what the sandbox
    knows beyond the exit status, e.g. "out of memory (limit 2g)")."""
    if exit_info.aborted:
        return Outcome.stopped(exit_info.aborted)
    if exit_info.returncode == 0 and not exit_info.timed_out:
        return Outcome.completed()
    return Outcome.failed(cause or describe(exit_info))


def _final_line(outcome: Outcome) -> str:
    return f"task {outcome.status}" + (f": {outcome.reason}" if outcome.reason else "")


def _gpus(gpus: tuple[int, ...]) -> str:
    return ",".join(map(str, gpus)) if gpus else "none"


def _clean_up(ctx: TaskContext, task_id: str) -> None:
    ctx.models.release(task_id)
    if ctx.keep_work_dir:
        return
    failures: list[str] = []

    def note(_function: object, path: str, exc_info: tuple[object, BaseException, object]) -> None:
        failures.append(f"{path}: {exc_info[1]}")

    work_dir = ctx.settings.work_root / task_id
    shutil.rmtree(work_dir, onerror=note)  # onexc needs Python 3.12
    if failures:  # e.g. files a task container wrote as another user: say so, do not hide it
        log.warning(
            "task work dir not fully removed",
            path=str(work_dir),
            failures=len(failures),
            first=failures[0],
        )
