"""Commands that talk to the server as a user would: enqueue, ls, logs, abort, requeue."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from agent.api.client import ApiClient
from agent.api.errors import ApiError, NotFoundError
from agent.cli.support import EXIT_FAILURE, EXIT_USAGE, LogCursor, access, run, settings_from
from agent.pipeline.host import ServerAccess
from agent.pipeline.requeue import clear_attempts

FINAL_STATUSES = frozenset({"completed", "failed", "stopped", "published", "closed"})


def _client(server: ServerAccess) -> ApiClient:
    return ApiClient(server.api_host, server.access_key, server.secret_key, retry_for=30.0)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_FAILURE)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("script", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--queue", default="", help="Queue name (default: the default queue).")
@click.option("--name", default="", help="Task name (default: the script's name).")
@click.option("--project", default="conveyor", show_default=True)
@click.option("--requirements", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--python", default="", help="Interpreter, e.g. 3.10 (default: this one's).")
@click.option("--docker", "docker_image", default="", help="Base image to run the task in.")
@click.option("--script-only", is_flag=True, help="Send the script's text, not its git checkout.")
@click.pass_context
def enqueue(
    ctx: click.Context,
    script: Path,
    args: tuple[str, ...],
    queue: str,
    name: str,
    project: str,
    requirements: Path | None,
    python: str,
    docker_image: str,
    script_only: bool,
) -> None:
    """Create a task from a local script (in a git checkout or not) and enqueue it.

    ARGS after the script are the script's own arguments (put them after ``--`` if one of them
    is also an option of this command). Prints the new task's id on stdout.
    """
    from agent.cli.submit import SubmitError, describe_script  # gitpython: only for enqueue

    settings = settings_from(ctx)
    server = access(settings)
    try:
        sub = describe_script(
            script, args, requirements=requirements, python=python,
            docker_image=docker_image, name=name, script_only=script_only,
        )  # fmt: skip
    except SubmitError as exc:
        _fail(str(exc))
        return

    async def go() -> str:
        async with _client(server) as api:
            queue_id = await (api.queue_id(queue) if queue else api.default_queue_id())
            project_id = await api.get_project_id(project)
            task_id = await api.create_task(
                sub.name, project_id, script=sub.script, container=sub.container or None
            )
            await api.enqueue(task_id, queue_id)
            return task_id

    try:
        click.echo(run(go))
    except ApiError as exc:
        _fail(str(exc))


@click.command("ls")
@click.argument("what", type=click.Choice(["tasks", "queues", "workers"]))
@click.option("--status", "statuses", multiple=True, help="Only tasks in this status (repeat).")
@click.option("--project", default="", help="Only tasks of this project (by name).")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of the documents.")
@click.pass_context
def list_things(
    ctx: click.Context, what: str, statuses: tuple[str, ...], project: str, as_json: bool
) -> None:
    """List tasks, queues or workers (tasks: filtered by --status / --project)."""
    if what != "tasks" and (statuses or project):
        click.echo("error: --status and --project filter tasks only", err=True)
        sys.exit(EXIT_USAGE)
    server = access(settings_from(ctx))

    async def go() -> list[dict[str, Any]]:
        async with _client(server) as api:
            if what == "tasks":
                return await list_tasks(api, statuses, project)
            if what == "queues":
                return await api.list_queues()
            return await api.list_workers()

    try:
        rows = run(go)
    except ApiError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    columns = {
        "tasks": ("id", "name", "status", "status_reason"),
        "queues": ("id", "name", "entries"),
        "workers": ("id", "queues", "task"),
    }[what]
    _print_table(columns, rows)


async def list_tasks(api: ApiClient, statuses: Sequence[str], project: str) -> list[dict[str, Any]]:
    """Tasks by status and project name; an unknown project is an error, not an empty list."""
    filters: dict[str, Any] = {"order_by": ["-last_update"]}
    if statuses:
        filters["status"] = list(statuses)
    if project:
        filters["project"] = [await api.get_project_id(project, create=False)]
    return await api.list_tasks(**filters)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return (
            str(len(value)) if value and isinstance(value[0], dict) else ",".join(map(str, value))
        )
    if isinstance(value, dict):
        return str(value.get("id") or value.get("name") or "")
    return "" if value is None else str(value)


def _print_table(columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Tab-separated rows for pipes and scripts; on a terminal, aligned under a header."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    if not sys.stdout.isatty():
        for line in cells:
            click.echo("\t".join(line))
        return
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for line in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


@click.command()
@click.argument("task_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task ends.")
@click.option("--interval", default=0.5, show_default=True, help="Follow poll interval (s).")
@click.pass_context
def logs(ctx: click.Context, task_id: str, follow: bool, interval: float) -> None:
    """Print a task's console log; with --follow, until the task ends (exit 1 unless completed)."""
    server = access(settings_from(ctx))

    async def go() -> str:
        cursor = LogCursor()
        async with _client(server) as api:
            status, _ = await api.task_status(task_id)
            events = await api.get_task_log(task_id, last=100_000)
            while True:
                for event in cursor.new(events):
                    click.echo(str(event.get("msg", "")).rstrip("\n"))
                if not follow or status in FINAL_STATUSES:
                    return status
                await asyncio.sleep(interval)
                status, _ = await api.task_status(task_id)  # before the log: no line missed
                events = await api.get_task_log_since(task_id, cursor.since_ms)

    try:
        status = run(go)
    except NotFoundError:
        _fail(f"task {task_id} not found")
        return
    if follow:
        click.echo(f"[task {task_id} {status}]", err=True)
        sys.exit(0 if status == "completed" else EXIT_FAILURE)


@click.command()
@click.argument("task_id")
@click.pass_context
def abort(ctx: click.Context, task_id: str) -> None:
    """Ask the agent running a task to stop it (``tasks.stop``)."""
    server = access(settings_from(ctx))

    async def go() -> None:
        async with _client(server) as api:
            await api.stop_task(task_id, reason="aborted from the conveyor CLI")

    try:
        run(go)
    except ApiError as exc:
        _fail(str(exc))


@click.command()
@click.argument("task_id")
@click.option("--queue", default="", help="Queue name (default: the task's last queue).")
@click.pass_context
def requeue(ctx: click.Context, task_id: str, queue: str) -> None:
    """Put a finished or failed task back on a queue."""
    server = access(settings_from(ctx))

    async def go() -> None:
        async with _client(server) as api:
            spec = await api.get_task(task_id)
            queue_id = await (api.queue_id(queue) if queue else _last_queue(api, spec.queue_id))
            if spec.status not in ("created", "stopped", "failed", "queued"):
                await api.reset_task(task_id)
            await clear_attempts(api, task_id)  # a fresh request: retries counted anew
            await api.enqueue(task_id, queue_id)

    try:
        run(go)
    except ApiError as exc:
        _fail(str(exc))


async def _last_queue(api: ApiClient, queue_id: str) -> str:
    return queue_id or await api.default_queue_id()


COMMANDS = (enqueue, list_things, logs, abort, requeue)
