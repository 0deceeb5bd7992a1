"""``serve()``: the foreground server prints the lines a user pastes, and stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from agent.server.embedded import ServerRefused
from agent.server.main import serve
from tests.helpers import python_executable

SERVE = (
    "import sys; from pathlib import Path; from agent.server.main import serve; "
    "serve('127.0.0.1', 0, Path(sys.argv[1]))"
)


def test_serve_prints_env_lines_and_exits_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [python_executable(), "-c", SERVE, str(tmp_path / "s.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(7)]
        env = dict(line.split("=", 1) for line in lines if line.startswith("CLEARML_"))
        assert set(env) == {
            "CLEARML_API_HOST",
            "CLEARML_WEB_HOST",
            "CLEARML_FILES_HOST",
            "CLEARML_API_ACCESS_KEY",
            "CLEARML_API_SECRET_KEY",
        }
        login = httpx.get(
            f"{env['CLEARML_API_HOST']}/auth.login",
            auth=(env["CLEARML_API_ACCESS_KEY"], env["CLEARML_API_SECRET_KEY"]),
            timeout=30,
        )
        assert login.status_code == 200
        assert env["CLEARML_FILES_HOST"] == env["CLEARML_API_HOST"] + "/files"
        assert (tmp_path / "files").is_dir()  # the file service's storage, next to the database
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_serve_refuses_public_address_without_credentials(tmp_path: Path) -> None:
    with pytest.raises(ServerRefused, match="non-loopback"):
        serve("0.0.0.0", 0, tmp_path / "s.db")
    assert not (tmp_path / "s.db").exists()
