"""What every ``conveyor`` command shares: settings from flags, the server, exit codes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from agent.connect import ConnectError, resolve_access
from agent.logsetup import configure
from agent.pipeline.plan import ServerAccess
from agent.settings import Settings, SettingsError, load_settings

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_SERVER = 3


def settings_from(ctx: click.Context, **flags: Any) -> Settings:
    """Settings with this command's flags on top; a bad setting is a usage error."""
    root = ctx.find_root()
    config: Path | None = (root.obj or {}).get("config")
    try:
        settings = load_settings(config_path=config, overrides=flags)
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    configure(settings.log_format, settings.log_level)
    return settings


def access(settings: Settings) -> ServerAccess:
    try:
        return resolve_access(settings)
    except ConnectError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_NO_SERVER)


def run(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(coro())
