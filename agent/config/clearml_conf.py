"""The server settings a ClearML user already has in ``~/clearml.conf``.

``clearml-init`` writes the file in HOCON (nested ``api { ... }`` blocks, ``"quoted"`` and
unquoted values, ``${...}`` substitutions), so it is read with ``pyhocon``, not by hand. Only the
``api`` section matters to the agent; everything else in the file (``sdk { ... }``) is ignored.

The keys are the ones the clearml SDK reads (``api.api_server``, with the older ``api.host`` as
a fallback, ``api.web_server``, ``api.files_server``, ``api.credentials.access_key`` and
``api.credentials.secret_key``); the file is the one the SDK uses: ``$CLEARML_CONFIG_FILE``, else
``~/clearml.conf``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config.errors import SettingsError

CONFIG_FILE_VAR = "CLEARML_CONFIG_FILE"
DEFAULT_FILENAME = "clearml.conf"

# Settings field -> the HOCON paths under ``api`` that hold it, first present wins.
API_KEYS: dict[str, tuple[str, ...]] = {
    "api_host": ("api_server", "host"),
    "web_host": ("web_server",),
    "files_host": ("files_server",),
    "access_key": ("credentials.access_key",),
    "secret_key": ("credentials.secret_key",),
}


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$CLEARML_CONFIG_FILE`` if set, else ``~/clearml.conf`` (as the clearml SDK does)."""
    environ = os.environ if environ is None else environ
    if environ.get(CONFIG_FILE_VAR):
        return Path(environ[CONFIG_FILE_VAR]).expanduser()
    return Path.home() / DEFAULT_FILENAME


def read_clearml_conf(path: Path | None = None) -> dict[str, str]:
    """Settings field names -> values found in the ``api`` section of a clearml.conf.

    Only non-empty values are returned. A missing file gives ``{}``; a file that cannot be read
    or parsed, or whose ``api`` values are not plain values, raises ``SettingsError`` naming it.
    """
    path = default_path() if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"clearml config file {path}: cannot read it: {exc}") from exc
    api = _parse(text, path).get("api", None)
    if api is None:
        return {}
    if not isinstance(api, Mapping):
        raise SettingsError(f"clearml config file {path}: 'api' is not a section")
    found: dict[str, str] = {}
    for name, keys in API_KEYS.items():
        for key in keys:
            value = _lookup(api, key, path)
            if value:
                found[name] = value
                break
    return found


def _parse(text: str, path: Path) -> Mapping[str, Any]:
    # Imported here: pyhocon (and pyparsing under it) costs ~0.3 s to import, and most
    # machines running the agent have no clearml.conf at all.
    import pyparsing
    from pyhocon import ConfigFactory
    from pyhocon.exceptions import ConfigException

    try:
        tree: Mapping[str, Any] = ConfigFactory.parse_string(text, basedir=str(path.parent))
    except (pyparsing.ParseBaseException, ConfigException) as exc:
        raise SettingsError(f"clearml config file {path}: not valid HOCON: {exc}") from exc
    return tree


def _lookup(api: Mapping[str, Any], key: str, path: Path) -> str:
    """The value at ``api.<key>`` as a string; "" when absent or null."""
    value: Any = api
    for part in key.split("."):
        if not isinstance(value, Mapping):
            raise SettingsError(f"clearml config file {path}: 'api.{key}': a parent is no section")
        value = value.get(part, None)
        if value is None:
            return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value).strip()
    raise SettingsError(f"clearml config file {path}: 'api.{key}' must be a single value")
