"""What every ``conveyor`` command shares: settings from flags, the server, exit codes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from agent.config.errors import SettingsError
from agent.config.logsetup import configure
from agent.config.settings import Settings, load_settings
from agent.pipeline.host import ServerAccess
from agent.worker.connect import ConnectError, resolve_access

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


class LogCursor:
    """Pure: which console events of a followed log are new. Fetches ask for events stamped
    at or after ``since_ms`` (the last one printed), so a later event sharing that millisecond
    is not missed; the ones already printed at it are skipped. An event that arrives after
    newer ones were printed but stamped before them is not shown by the follow (a plain
    ``conveyor logs`` shows it); Conveyor's own shipper stamps strictly increasing times."""

    def __init__(self) -> None:
        self.since_ms = 0
        self._at_since: list[tuple[str, str]] = []  # (level, msg) printed at since_ms

    def new(self, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        fresh: list[Mapping[str, Any]] = []
        seen = list(self._at_since)
        for event in events:
            stamp = int(event.get("timestamp") or 0)
            key = (str(event.get("level", "")), str(event.get("msg", "")))
            if stamp < self.since_ms:
                continue
            if stamp == self.since_ms and key in seen:
                seen.remove(key)  # printed already (once per copy printed)
                continue
            if stamp > self.since_ms:
                self.since_ms, self._at_since, seen = stamp, [], []
            self._at_since.append(key)
            fresh.append(event)
        return fresh
