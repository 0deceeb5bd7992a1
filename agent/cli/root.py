"""The ``conveyor`` command line: thin commands over settings, service and the API client.

Exit codes (agent/cli/support.py): 0 success; 1 failure (the task failed, the server refused,
the agent could not run); 2 usage (bad flags or settings); 3 no server reachable or configured.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent import __version__
from agent.cli.clone import clone
from agent.cli.support import EXIT_FAILURE, EXIT_USAGE, access, run, settings_from
from agent.cli.tasks import COMMANDS
from agent.worker.connect import ConnectError
from agent.worker.services import DEFAULT_SERVICES_CAP

if TYPE_CHECKING:
    from agent.config.settings import Settings
    from agent.server.embedded import Credentials


@click.group()
@click.version_option(__version__, prog_name="conveyor")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Agent config file (TOML). Default: $CONVEYOR_CONFIG or the user config dir.",
)
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Conveyor: a worker agent for ML task queues (ClearML protocol)."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8008, show_default=True, type=int)
@click.option("--db", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--files-quota-gb", type=float, default=None, help="File service size bound.")
@click.option("--files-public", is_flag=True, help="Downloads need no token.")
@click.option(
    "--worker-timeout",
    type=click.FloatRange(min=1.0, max=7 * 24 * 3600.0),
    default=None,
    help="Seconds without a report before any agent is taken for lost and its task requeued "
    "(overrides each agent's own worker_timeout; docs/operations.md).",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0, max=100),
    default=None,
    help="Retries of a lost agent's task when neither the task nor its agent set a cap "
    "(default 2).",
)
@click.pass_context
def server(
    ctx: click.Context,
    host: str,
    port: int,
    db: Path | None,
    files_quota_gb: float | None,
    files_public: bool,
    worker_timeout: float | None,
    max_retries: int | None,
) -> None:
    """Run the embedded control plane (SQLite, and a file service) in the foreground."""
    from agent.server.embedded import Credentials, ServerRefused
    from agent.server.main import serve
    from agent.worker.connect import remove_embedded_state

    settings = settings_from(ctx)
    explicit = (
        Credentials(settings.access_key, settings.secret_key)
        if settings.access_key and settings.secret_key
        else None
    )
    try:
        serve(
            host,
            port,
            db or settings.data_dir / "server.db",
            credentials=explicit,
            files_quota=int(files_quota_gb * 1024**3) if files_quota_gb else None,
            files_public=files_public,
            worker_timeout=worker_timeout,
            max_retries=max_retries,
            on_ready=functools.partial(_record_embedded, settings),
        )
    except ServerRefused as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        remove_embedded_state(settings)


def _record_embedded(settings: Settings, url: str, creds: Credentials, files_host: str) -> None:
    """Where a started ``conveyor server`` is, for agents and commands on this machine."""
    from agent.pipeline.host import ServerAccess
    from agent.worker.connect import write_embedded_state

    access = ServerAccess(url, url, files_host, creds.access_key, creds.secret_key)
    write_embedded_state(settings, access)


# ``--docker`` alone: docker mode with the configured default image; ``--docker IMAGE``: with
# IMAGE as the default (tasks that name an image still get theirs).
docker_option = click.option(
    "--docker",
    "docker_image",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[IMAGE]",
    help="Run tasks in containers: their own image, else IMAGE (docs/docker.md).",
)


def docker_flags(docker_image: str | None) -> dict[str, Any]:
    """``--docker [IMAGE]`` → settings overrides (None: not given, the config decides)."""
    if docker_image is None:
        return {}
    return {"docker": True, "docker_image": docker_image or None}


@main.command()
@click.argument("more_queues", nargs=-1, metavar="[QUEUE]...")
@click.option("--queue", "queues", multiple=True, help="Queue name, in priority order.")
@click.option("--order-fairness", is_flag=True, default=None, help="Round-robin the queues.")
@click.option("--slots", type=int, default=None, help="Tasks run concurrently.")
@click.option("--gpus", default=None, help="none | all | 0,1")
@click.option("--api-host", default=None, help="Server URL; empty: embedded control plane.")
@click.option("--worker-id", default=None)
@click.option(
    "--services-mode",
    type=int,
    is_flag=False,
    flag_value=DEFAULT_SERVICES_CAP,
    default=None,
    metavar="[N]",
    help=f"Host up to N controller tasks at once, no GPUs (alone: {DEFAULT_SERVICES_CAP}).",
)
@click.option("--create-queue", is_flag=True, default=None, help="Create missing queues.")
@click.option("--log-level", default=None, help="debug | info | warning | error")
@click.option("--detached", is_flag=True, help="Run in the background (log: data_dir/run/).")
@click.option("--stop", "stop_it", is_flag=True, help="Stop this worker id's background agent.")
@docker_option
@click.pass_context
def daemon(
    ctx: click.Context,
    /,
    more_queues: tuple[str, ...],
    queues: tuple[str, ...],
    detached: bool,
    stop_it: bool,
    docker_image: str | None,
    **flags: Any,
) -> None:
    """Poll queues and run their tasks (``--queue Q1 Q2``; default: the default queue)."""
    from agent.errors import SandboxUnavailable
    from agent.worker.service import control_plane, run_daemon

    # the other options are named after their settings (order_fairness, slots, gpus, ...)
    names = (*queues, *more_queues)
    settings = settings_from(ctx, queues=names or None, **flags, **docker_flags(docker_image))
    if detached or stop_it:
        background(settings, stop_it)
    try:
        with control_plane(settings) as server_access:
            code = run(lambda: run_daemon(settings, server_access))
    except (ConnectError, SandboxUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(int(code))


def background(settings: Settings, stop_it: bool) -> None:
    """``--detached`` / ``--stop``: start or stop this worker id's background agent, exit."""
    from agent.worker import detach

    try:
        if stop_it:
            click.echo(f"stopped the agent (pid {detach.stop(settings)})")
        else:
            pid, log = detach.spawn(settings, sys.argv)
            click.echo(f"agent running in the background: pid {pid}, log {log}")
    except detach.DetachError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(0)


@main.command()
@click.option("--id", "task_id", required=True, help="Task id.")
@docker_option
@click.pass_context
def execute(ctx: click.Context, task_id: str, docker_image: str | None) -> None:
    """Run one task in the foreground with the daemon's pipeline."""
    from agent.errors import SandboxUnavailable
    from agent.pipeline.report import Status
    from agent.worker.service import execute_one

    settings = settings_from(ctx, **docker_flags(docker_image))
    server_access = access(settings)
    try:
        outcome = run(lambda: execute_one(settings, server_access, task_id))
    except SandboxUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"task {task_id}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else "")
    )
    sys.exit(0 if outcome.status is Status.COMPLETED else EXIT_FAILURE)


@main.command()
@click.option("--id", "task_id", required=True, help="Task id.")
@click.option(
    "--target",
    required=True,
    help="The directory to prepare in; with --docker, the name of the image to make.",
)
@docker_option
@click.option(
    "--entry-point",
    type=click.Choice(["reuse_task"]),
    default=None,
    help="With --docker: the image's CMD runs the task (credentials from `docker run -e`).",
)
@click.pass_context
def build(
    ctx: click.Context, task_id: str, target: str, docker_image: str | None, entry_point: str | None
) -> None:
    """Prepare a task's source and environment in TARGET without running it; with --docker,
    make TARGET a docker image with them ready."""
    from agent.cli.build import build_image, build_task
    from agent.errors import SandboxUnavailable, StageError

    if entry_point and docker_image is None:
        raise click.UsageError("--entry-point needs --docker")
    settings = settings_from(ctx, **docker_flags(docker_image))
    server_access = access(settings)
    try:
        if docker_image is not None:
            image = run(lambda: build_image(settings, server_access, task_id, target, entry_point))
            click.echo(f"image {target}: {image}")
            return
        command = run(lambda: build_task(settings, server_access, task_id, Path(target)))
    except SandboxUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    except StageError as exc:
        click.echo(f"error: {exc.reason}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo("to run it (API secret left out):")
    click.echo(command)


@main.command("config")
@click.pass_context
def show_config(ctx: click.Context) -> None:
    """Print the effective settings (secrets masked)."""
    settings = settings_from(ctx)
    click.echo(json.dumps(settings.masked(), indent=2, default=str))


for _command in (*COMMANDS, clone):
    main.add_command(_command)

# conveyor slurm: the Slurm glue (agent/slurm, docs/slurm.md)
from agent.cli.slurm import slurm as _slurm  # noqa: E402

main.add_command(_slurm)
