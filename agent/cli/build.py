"""``conveyor build``: prepare a task's source and environment without running it (debugging).

The same stages as a real run, into a directory the user chose, with every console line on
stdout; at the end, the command line (and environment) that the agent would run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
import shutil
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


async def build_image(
    settings: Settings, access: ServerAccess, task_id: str, reference: str, entry: str | None
) -> str:
    """``build --docker``: an image named ``reference`` with the task's environment ready (and
    with ``entry`` "reuse_task", its command line as CMD); returns the image id."""
    from agent.pipeline.container import ContainerSandbox, DockerRuntime
    from agent.pipeline.docker_image import (
        ImageRecipe,
        make_image,
        split_reference,
        without_credentials,
    )

    console = PrintConsole()
    async with ApiClient(access.api_host, access.access_key, access.secret_key) as api:
        spec = await api.get_task(task_id)
    task_dir = (settings.data_dir / "build" / task_id).absolute()
    shutil.rmtree(task_dir, ignore_errors=True)
    plan = make_plan(spec, settings, host_facts(), access)
    # The environment stage needs no API credentials: they stay out of the committed container.
    plan = dataclasses.replace(plan, task_dir=task_dir, env=without_credentials(plan.env))
    runtime = DockerRuntime.connect(settings, clean=False)  # a running agent's are not ours
    box = ContainerSandbox(runtime)
    try:
        source = prepare_source(
            plan.source, task_dir=task_dir, mirror_root=settings.cache_dir / "git", console=console
        )
        plan = refine_for_source(plan, spec, settings, *sdk_hints(source))
        plan.overrides.report(console)
        env = await asyncio.to_thread(box.prepare, plan, source, console)
        extra = apply_overrides(plan.overrides, task_dir)
        entry_file = plan.entry if plan.module else source.entry_point
        as_is = plan.container is not None and plan.container.run_as_is
        recipe = ImageRecipe(
            task_dir=task_dir,
            cwd=source.cwd,
            argv=expand_references(plan.argv(env.python, entry_file), extra),
            env=without_credentials({**plan.env, **extra}),
            venv=None if as_is else env.venv,
        )
        name, tag = split_reference(reference)
        image = await asyncio.to_thread(make_image, box.container, recipe, name, tag, entry)
        console.info(f"image {name}:{tag} ({image.short_id}) built")
        return str(image.id)
    finally:
        await box.close()
        shutil.rmtree(task_dir, ignore_errors=True)
