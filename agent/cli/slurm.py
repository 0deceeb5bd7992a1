"""``conveyor slurm``: the command that runs the glue (registered in agent/cli.py)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import click

from agent.cli.support import EXIT_USAGE, run, settings_from
from agent.config.settings import Settings
from agent.pipeline.host import ServerAccess
from agent.slurm.resources import OPTIONS, ResourceError, check_mapping, check_queue_map
from agent.worker.connect import ConnectError


async def run_glue(settings: Settings, access: ServerAccess) -> None:
    from agent.slurm.glue import Glue
    from agent.slurm.slurmcli import SlurmCli
    from agent.worker.service import clients

    worker = settings.worker_id or f"{socket.gethostname()}:slurm"
    async with clients(settings.replace(worker_id=worker), access) as c:
        glue = Glue(settings, c.api, SlurmCli(settings.slurm_bin_dir), access, worker)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, glue.stopping.set)  # only a flag: the loop ends
        await glue.run()


@click.command("slurm")
@click.argument("more_queues", nargs=-1, metavar="[QUEUE]...")
@click.option("--queue", "queues", multiple=True, help="Queue name (each feeds Slurm).")
@click.option("--api-host", default=None, help="Server URL; empty: embedded control plane.")
@click.option("--worker-id", default=None, help="Default: <hostname>:slurm.")
@click.pass_context
def slurm(
    ctx: click.Context,
    more_queues: tuple[str, ...],
    queues: tuple[str, ...],
    api_host: str | None,
    worker_id: str | None,
) -> None:
    """Run queued tasks as Slurm batch jobs (docs/slurm.md); one glue per cluster."""
    from agent.worker.service import control_plane

    names = (*queues, *more_queues)
    settings = settings_from(ctx, queues=names or None, api_host=api_host, worker_id=worker_id)
    try:
        check_queue_map(settings.slurm_queues)
        check_mapping(settings.slurm_defaults, "slurm_defaults", frozenset(OPTIONS))
    except ResourceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        with control_plane(settings) as server_access:
            run(lambda: run_glue(settings, server_access))
    except ConnectError as exc:
        raise click.ClickException(str(exc)) from exc
