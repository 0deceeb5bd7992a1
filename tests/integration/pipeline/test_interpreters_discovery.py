"""Interpreter discovery on this machine: real binaries, fake shims, uv's refusal to download."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent.errors import StageError
from agent.pipeline.environment import default_uv
from agent.pipeline.interpreters import locate_interpreter, pyenv_root

PYENV_310 = sorted((pyenv_root() / "versions").glob("3.10.*/bin/python3.10"))
PYENV_312 = sorted((pyenv_root() / "versions").glob("3.12.*/bin/python3.12"))
needs_pyenv = pytest.mark.skipif(
    not (PYENV_310 and PYENV_312), reason="needs pyenv's python 3.10 and 3.12"
)


def _write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@needs_pyenv
def test_shims_and_impostors_on_path_are_skipped(tmp_path: Path) -> None:
    shims = tmp_path / "shimdir"
    shims.mkdir()
    _write_exe(shims / "python3.10", '#!/usr/bin/env bash\nexec "$PYENV_ROOT/libexec/pyenv" exec\n')
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    (impostor / "python3.10").symlink_to(PYENV_312[-1])  # named 3.10, runs 3.12
    real = tmp_path / "real"
    real.mkdir()
    (real / "python3.10").symlink_to(PYENV_310[-1])
    path_env = os.pathsep.join(map(str, (shims, impostor, real)))
    found = locate_interpreter("python3.10", path_env=path_env, search_pyenv=False)
    assert found.found_in == "PATH"
    assert found.version.startswith("3.10.")
    assert found.path.resolve() == PYENV_310[-1].resolve()


@needs_pyenv
def test_pyenv_versions_are_found_without_shims() -> None:
    found = locate_interpreter("3.10", path_env="")
    assert found.found_in == "pyenv" and found.path == PYENV_310[-1]
    exact = locate_interpreter(PYENV_310[-1].parent.parent.name, path_env="")
    assert exact.version == PYENV_310[-1].parent.parent.name


def test_explicit_path_and_agent_default() -> None:
    me = locate_interpreter(sys.executable)
    assert me.version == ".".join(map(str, sys.version_info[:3]))
    with pytest.raises(StageError, match="does not exist or does not run"):
        locate_interpreter("/nonexistent/python3")


def test_missing_version_has_a_clear_reason() -> None:
    uv = default_uv()
    assert uv is not None
    with pytest.raises(StageError) as err:
        locate_interpreter("python3.99", uv=uv)
    assert err.value.reason.startswith(
        "python 3.99 not found on this machine (looked in PATH, pyenv, uv) "
        "and could not be installed: "
    )
    with pytest.raises(StageError, match=r"^python 3\.99 not found on this machine"):
        locate_interpreter("3.99", uv=uv, allow_install=False)
