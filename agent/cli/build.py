"""``conveyor build``: prepare a task's source and environment without running it (debugging).

The same stages as a real run, into a directory the user chose, with every console line on
stdout; at the end, the command line (and environment) that the agent would run.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import click

from agent.api.client import ApiClient
from agent.config.settings import Settings
from agent.pipeline.environment import VenvEnvironment
from agent.pipeline.host import ServerAccess
from agent.pipeline.overrides import apply_overrides, expand_references
from agent.pipeline.plan import make_plan, refine_for_source
from agent.pipeline.source import prepare_source
from agent.pipeline.source_request import sdk_hints
from agent.worker.service import host_facts


class PrintConsole:
    """The task console, on the terminal."""

    def info(self, message: str) -> None:
        click.echo(f"conveyor: {message}")

    def error(self, message: str) -> None:
        click.echo(f"conveyor: error: {message}", err=True)


async def build_task(settings: Settings, access: ServerAccess, task_id: str, target: Path) -> str:
    """Prepare ``task_id`` under ``target``; returns the shell command that would run it."""
    console = PrintConsole()
    async with ApiClient(access.api_host, access.access_key, access.secret_key) as api:
        spec = await api.get_task(task_id)
    target = target.resolve()
    plan = dataclasses.replace(make_plan(spec, settings, host_facts(), access), task_dir=target)
    source = prepare_source(
        plan.source, task_dir=target, mirror_root=settings.cache_dir / "git", console=console
    )
    plan = refine_for_source(plan, spec, settings, *sdk_hints(source))
    plan.overrides.report(console)
    request = dataclasses.replace(plan.environment, source_root=source.root)
    env = VenvEnvironment().prepare(
        request, task_dir=target, cache_dir=settings.cache_dir, console=console
    )
    extra = apply_overrides(plan.overrides, target)
    entry = plan.entry if plan.module else source.entry_point
    argv = expand_references(plan.argv(env.python, entry), extra)
    shown_env = {k: v for k, v in {**plan.env, **extra}.items() if "SECRET" not in k}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(shown_env.items()))
    return f"cd {shlex.quote(str(source.cwd))} && {exports} {shlex.join(argv)}"
