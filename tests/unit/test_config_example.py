"""config/agent.toml documents every setting, with its true default and its variable."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from agent.config.settings import ENV_PREFIX, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "agent.toml"
FIELDS = [f.name for f in dataclasses.fields(Settings)]
TABLES = (
    "server",
    "worker",
    "polling",
    "retries",
    "directories",
    "environments",
    "slurm",
    "logging",
)
# A commented-out setting: "# name = value", the name a Settings field, at the start of a line.
SETTING_LINE = re.compile(r"^# (?P<name>[a-z_]+) = (?P<value>.*)$", re.MULTILINE)


@pytest.fixture
def text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def _settings_lines(text: str) -> dict[str, str]:
    return {m["name"]: m["value"] for m in SETTING_LINE.finditer(text) if m["name"] in FIELDS}


def test_example_as_shipped_loads_default_settings() -> None:
    assert load_settings(config_path=EXAMPLE, environ={}) == Settings()


def test_example_uses_the_documented_tables(text: str) -> None:
    assert tuple(tomllib.loads(text)) == TABLES


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_is_documented_with_its_variable(text: str, name: str) -> None:
    assert name in _settings_lines(text), f"config/agent.toml has no '# {name} = ...' line"
    assert ENV_PREFIX + name.upper() in text, (
        f"config/agent.toml does not name {ENV_PREFIX}{name.upper()}"
    )


def test_documented_values_are_the_defaults(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncommenting every setting line changes nothing: the shown values are the defaults."""
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME"):  # the documented dirs are the XDG fallbacks
        monkeypatch.delenv(var, raising=False)
    uncommented = SETTING_LINE.sub(lambda m: f"{m['name']} = {m['value']}", text)
    assert uncommented != text
    path = tmp_path / "agent.toml"
    path.write_text(uncommented, encoding="utf-8")
    loaded = tomllib.loads(uncommented)
    assert sorted(k for table in loaded.values() for k in table) == sorted(FIELDS)
    assert load_settings(config_path=path, environ={}) == Settings()
