"""Where the control plane is: a configured server, or the embedded one on this machine.

When the agent starts the embedded server it records the URL and credentials in
``<data_dir>/server.json`` (mode 0600), so the ``conveyor`` CLI on the same machine finds it
without configuration.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from agent.config.settings import Settings
from agent.pipeline.host import ServerAccess

STATE_FILE = "server.json"


class ConnectError(RuntimeError):
    """No server is configured or running; the message says how to get one."""


def state_path(settings: Settings) -> Path:
    return settings.data_dir / STATE_FILE


def write_embedded_state(settings: Settings, access: ServerAccess) -> Path:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "api_host": access.api_host,
        "web_host": access.web_host,
        "files_host": access.files_host,
        "access_key": access.access_key,
        "secret_key": access.secret_key,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".server.", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def remove_embedded_state(settings: Settings) -> None:
    state_path(settings).unlink(missing_ok=True)


def running_embedded(settings: Settings, timeout: float = 2.0) -> ServerAccess | None:
    """The embedded control plane another agent runs on this data dir, if it answers: a second
    ``conveyor daemon`` (say a services agent) joins it instead of starting its own."""
    try:
        access = resolve_access(settings.replace(api_host=""))
    except ConnectError:
        return None
    url = urlsplit(access.api_host)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout):
            return access
    except OSError:
        return None  # a state file left by an agent that was killed


def resolve_access(settings: Settings) -> ServerAccess:
    """The configured server, else the embedded one recorded in the data dir."""
    if settings.api_host:
        return ServerAccess(
            api_host=settings.api_host.rstrip("/"),
            web_host=settings.web_host or settings.api_host.rstrip("/"),
            # Unset: the task's SDK derives it from the API host as it does for a ClearML server
            # (a Conveyor server elsewhere: set files_host to <api host>/files).
            files_host=settings.files_host,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
        )
    path = state_path(settings)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConnectError(
            "no server configured (CONVEYOR_API_HOST / CLEARML_API_HOST) and no embedded server "
            f"running here ({path} is missing): start `conveyor daemon` or `conveyor server`"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConnectError(f"{path} is corrupt ({exc}); restart the embedded server") from exc
    return ServerAccess(**{k: str(raw.get(k, "")) for k in ServerAccess.__dataclass_fields__})
