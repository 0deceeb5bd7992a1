"""Every `conveyor` command answers --help (and documents itself)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from agent.cli import main

COMMANDS = sorted(main.commands)


def test_the_command_set() -> None:
    assert set(COMMANDS) >= {
        "server", "daemon", "execute", "build", "config", "enqueue", "ls", "logs", "abort",
        "requeue",
    }  # fmt: skip


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help(command: str) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    if command:
        doc = main.commands[command].help or ""
        assert doc.strip(), f"{command} has no help text"
        assert doc.strip().split("\n")[0][:30] in result.output


def test_usage_errors_exit_2() -> None:
    result = CliRunner().invoke(main, ["daemon", "--slots", "many"])
    assert result.exit_code == 2
