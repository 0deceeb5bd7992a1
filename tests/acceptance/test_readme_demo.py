"""The README's first command, as a newcomer runs it: a fresh clone, a fresh HOME."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "the README starts with a bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_the_two_commands() -> None:
    assert readme_commands() == ["scripts/demo", "scripts/test"]


def test_demo_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "conveyor"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLEARML_", "CONVEYOR_", "VIRTUAL_ENV"))
    }
    env.update(
        HOME=str(home), XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(home / ".cache"))
    )
    pyenv = Path.home() / ".pyenv"  # pyenv's shims find their root through HOME otherwise
    if pyenv.is_dir():
        env.setdefault("PYENV_ROOT", str(pyenv))
    # uv's package cache may be shared with the developer's (speed only; nothing is reused else)
    env.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    done = subprocess.run(
        [readme_commands()[0]], cwd=clone, env=env, capture_output=True, text=True, timeout=900,
        check=False, shell=True,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "epoch 3/3" in done.stdout
    assert re.search(r"\[task \w+ completed\]", done.stderr)
