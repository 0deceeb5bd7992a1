"""``conveyor clone``: a copy of a task with parameters and an input model overridden, enqueued."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import click

from agent.api import editing
from agent.api.client import ApiClient
from agent.api.errors import ApiError
from agent.cli.support import EXIT_FAILURE, EXIT_USAGE, access, run, settings_from


class CloneUsageError(ValueError):
    """A ``--set`` or ``--input-model`` value that cannot be used; nothing was created."""


def parse_sets(sets: Sequence[str]) -> dict[str, str]:
    """Pure: ``("Args/lr=0.7", ...)`` → ``{"Args/lr": "0.7"}``; refuses what has no section."""
    out: dict[str, str] = {}
    for item in sets:
        key, eq, value = item.partition("=")
        section, slash, name = key.strip().partition("/")
        if not eq or not slash or not section or not name:
            raise CloneUsageError(
                f"--set {item!r}: expected SECTION/NAME=VALUE, e.g. Args/lr=0.7 or General/batch=64"
            )
        out[f"{section}/{name}"] = value
    return out


def is_url(value: str) -> bool:
    return "://" in value


def model_slot(existing: Sequence[str], requested: str) -> str:
    """Pure: which input model of the task ``--input-model`` replaces."""
    if requested:
        return requested
    if len(existing) == 1:
        return existing[0]
    if not existing:
        return "Input Model"
    raise CloneUsageError(
        f"the task has {len(existing)} input models ({', '.join(existing)}): "
        "say which with --model-name"
    )


@dataclass(frozen=True)
class CloneRequest:
    task_id: str
    name: str
    params: dict[str, str]
    input_model: str
    model_name: str
    queue: str


async def clone_and_enqueue(api: ApiClient, req: CloneRequest) -> str:
    """Everything is checked (queue, model, slot) before the clone is made."""
    queue_id = await api.queue_id(req.queue) if req.queue else ""
    slot, model_id = "", ""
    if req.input_model:
        slot = model_slot(await editing.input_model_names(api, req.task_id), req.model_name)
        if is_url(req.input_model):
            name = req.input_model.rstrip("/").rsplit("/", 1)[-1] or "imported"
            model_id = await editing.import_model(api, req.input_model, name)
        else:
            model_id = (await api.get_model(req.input_model)).id
    else:
        await api.get_task_document(req.task_id)  # a bad id fails here, before anything
    new_id = await editing.clone_task(api, req.task_id, req.name)
    if req.params:
        await editing.set_hyperparams(api, new_id, req.params)
    if model_id:
        await editing.set_input_model(api, new_id, slot, model_id)
    if queue_id:
        await api.enqueue(new_id, queue_id)
    return new_id


@click.command()
@click.argument("task_id")
@click.option("--name", default="", help="Name of the copy (default: the source's).")
@click.option("--set", "sets", multiple=True, metavar="SECTION/NAME=VALUE", help="Override.")
@click.option("--input-model", default="", help="Model id, or a weights URL to import.")
@click.option("--model-name", default="", help="Which input model to replace (if several).")
@click.option("--queue", default="", help="Enqueue the copy on this queue.")
@click.pass_context
def clone(
    ctx: click.Context,
    task_id: str,
    name: str,
    sets: tuple[str, ...],
    input_model: str,
    model_name: str,
    queue: str,
) -> None:
    """Copy a task, override parameters / input model, and (with --queue) enqueue the copy.

    Prints the new task's id.
    """
    try:
        params = parse_sets(sets)
    except CloneUsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    server = access(settings_from(ctx))
    req = CloneRequest(task_id, name, params, input_model, model_name, queue)

    async def go() -> str:
        async with ApiClient(
            server.api_host, server.access_key, server.secret_key, retry_for=30.0
        ) as api:
            return await clone_and_enqueue(api, req)

    try:
        click.echo(run(go))
    except (ApiError, CloneUsageError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
