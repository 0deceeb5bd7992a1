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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import structlog

from agent import retry
from agent.api.client import ApiClient
from agent.api.errors import ApiError
from agent.api.models import TaskDocumentError, TaskSpec
from agent.config.settings import Settings
from agent.errors import StageError
from agent.pipeline.abort import AbortWatch
from agent.pipeline.environment import PreparedEnvironment
from agent.pipeline.host import HostFacts, ServerAccess
from agent.pipeline.models import ModelCache, fetch_input_models, files_host_auth
from agent.pipeline.overrides import apply_overrides, expand_references
from agent.pipeline.plan import Plan, make_plan, refine_for_source
from agent.pipeline.report import Outcome, Status, report
from agent.pipeline.requeue import (
    Attempt,
    apply_verdict,
    begin_attempt,
    superseded,
    verdict_for_exit,
    verdict_for_stage,
)
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
    ctx: TaskContext,
    task_id: str,
    worker_id: str,
    gpus: tuple[int, ...],
    shutdown: asyncio.Event,
    max_retries: int | None = None,
) -> Outcome:
    """Run a claimed task to its end and report it (or requeue it, as the retry policy says
    for an infrastructure failure: agent/retry.py). Never raises for a task's own failure.
    ``max_retries``: the cap of the queue it came from (default: the agent's setting)."""
    run = _Run(ctx.settings.max_retries if max_retries is None else max_retries)
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
                watch = AbortWatch(
                    ctx.api, task_id, shutdown, ctx.settings.abort_poll_interval, console
                )
                async with watch:
                    outcome = await _run_stages(ctx, task_id, gpus, sandbox, console, watch, run)
                outcome = settle(outcome, watch.reason, watch.outside)
                run.superseded = watch.superseded
                console.info(run.verdict.console if run.verdict else _final_line(outcome, watch))
        except OSError as exc:  # the spool could not be written (disk full...): still report
            outcome = Outcome.failed(f"agent could not spool the task's log: {exc}")
            log.error("spool failure", error=str(exc))
        # The final status must arrive even through a server outage: the forever-retrying client.
        # Not if a later attempt owns the task now (the watchdog requeued it while this agent
        # could not report): that attempt's status is the task's.
        if run.superseded or await superseded(ctx.shipping_api, task_id, run.attempt):
            log.warning("attempt superseded: its final status is the later attempt's to give")
        elif run.verdict is not None and run.attempt is not None and not outcome.outside:
            attempt, verdict = run.attempt, run.verdict
            await apply_verdict(
                ctx.shipping_api,
                task_id,
                attempt.queue_id,
                attempt.runtime,
                verdict,
                worker_id,
                closing_line=False,
            )
        else:
            await report(ctx.shipping_api, task_id, outcome)
    await asyncio.to_thread(_clean_up, ctx, task_id)  # rmtree and cache eviction block
    structlog.contextvars.unbind_contextvars("task_id")
    return outcome


@dataclass
class _Run:
    """What the stages learn that the end of a run needs: the attempt, and the retry policy's
    verdict when the attempt failed for an infrastructure cause (it is requeued, not reported)."""

    default_retries: int
    attempt: Attempt | None = None
    verdict: retry.Verdict | None = None
    superseded: bool = False  # the server gave the task to a later attempt meanwhile

    def retry(self, verdict: retry.Verdict | None) -> None:
        """Note the policy's verdict (None: the failure is the task's own, reported as is)."""
        self.verdict = verdict


async def _run_stages(
    ctx: TaskContext,
    task_id: str,
    gpus: tuple[int, ...],
    sandbox: Sandbox,
    console: TaskConsole,
    watch: AbortWatch,
    run: _Run,
) -> Outcome:
    try:
        doc = await ctx.api.get_task_document(task_id)
        spec = TaskSpec.parse(doc)
        try:
            run.attempt = await begin_attempt(ctx.api, doc, spec.hyperparams, run.default_retries)
        except retry.RetrySettingError as exc:
            raise StageError(str(exc), stage="plan") from exc
        watch.attempt = run.attempt.number
        plan = make_plan(spec, ctx.settings, ctx.host, ctx.server, gpus)
        console.info(run.attempt.header)
        console.info(f"task {spec.name!r} ({task_id}) on {ctx.host.hostname}, gpus: {_gpus(gpus)}")
        source = await _stage(watch, _prepare_source, ctx, plan, console)
        plan = refine_for_source(plan, spec, ctx.settings, *sdk_hints(source))
        plan.overrides.report(console)
        headers_for = await _files_host_auth(ctx) if spec.input_models else None
        models = asyncio.ensure_future(
            fetch_input_models(ctx.api, spec, ctx.models, console, headers_for=headers_for)
        )
        try:  # input models download while the environment is built
            env = await _stage(watch, sandbox.prepare, plan, source, console)
            model_env = {**await models, retry.ATTEMPT_ENV: str(run.attempt.number)}
        finally:
            models.cancel()
        await _record(ctx.api, spec, source, env)
        ending = await _supervise(ctx.api, plan, source, env, model_env, sandbox, console, watch)
        outcome = judge(ending.exit, ending.cause)
        if outcome.status is Status.FAILED:
            verdict = verdict_for_exit(run.attempt, ending.exit.returncode, outcome.reason)
            run.retry(verdict)
        return outcome
    except TaskDocumentError as exc:
        console.error(f"malformed task document: {exc}")
        return Outcome.failed(f"malformed task document: {exc}")
    except StageError as exc:
        console.error(exc.reason)
        if run.attempt is not None:
            run.retry(verdict_for_stage(run.attempt, exc.stage, exc.reason))
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


async def _files_host_auth(ctx: TaskContext) -> Callable[[str], Mapping[str, str]] | None:
    """The files host's credential for model downloads (the API token, as the SDK sends it)."""
    if not ctx.server.files_host:
        return None
    try:
        token = await ctx.api.token()
    except ApiError as exc:  # the downloads go on without it; a 401 then says what failed
        log.warning("no api token for the files host", error=str(exc))
        return None
    return files_host_auth(ctx.server.files_host, token)


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
    watch.running = True
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
            stop_signals=plan.stop_signals,
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


def settle(outcome: Outcome, stop_reason: str | None, outside: Status | None) -> Outcome:
    """Pure: the outcome once the abort watch is heard. A final status set from outside stands
    (nothing is reported over it); a task whose stop was requested ends ``stopped`` even when
    its process failed by itself meanwhile (an SDK script ends itself with exit code 1 after
    its abort callback); a process that completed its work has completed."""
    if stop_reason is None:
        return outcome
    if outside is not None:
        return Outcome.set_outside(outside)
    if outcome.status is not Status.FAILED:
        return outcome
    return Outcome.stopped(stop_reason)


def _final_line(outcome: Outcome, watch: AbortWatch | None = None) -> str:
    if watch is not None and watch.superseded:
        return f"attempt {watch.attempt} ended: {watch.reason}"
    if outcome.outside:
        return f"task was marked {outcome.status} from outside; process stopped"
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
