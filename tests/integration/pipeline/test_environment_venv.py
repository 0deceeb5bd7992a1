"""The environment stage with real interpreters, real venvs, real uv and (a little) real PyPI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.errors import StageError
from agent.pipeline.console import ListConsole
from agent.pipeline.environment import (
    EnvironmentRequest,
    PreparedEnvironment,
    VenvEnvironment,
    default_uv,
)
from agent.pipeline.interpreters import pyenv_root

PYENV_310 = sorted((pyenv_root() / "versions").glob("3.10.*/bin/python3.10"))
SMALL = "# Python 3.10.13 (main) [GCC 12]\nsix\nidna\npackaging\nmine @ file:///home/me/mine\n"


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module's tests (each test that measures a cold start gets its own)."""
    return tmp_path_factory.mktemp("cache")


def _prepare(
    req: EnvironmentRequest, task_dir: Path, cache_dir: Path, env: VenvEnvironment | None = None
) -> tuple[PreparedEnvironment, ListConsole]:
    console = ListConsole()
    environment = env or VenvEnvironment()
    result = environment.prepare(req, task_dir=task_dir, cache_dir=cache_dir, console=console)
    return result, console


def _run(python: Path, code: str) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not PYENV_310, reason="needs pyenv's python 3.10")
def test_python_310_from_pyenv_without_requirements(tmp_path: Path, uv_cache: Path) -> None:
    result, console = _prepare(EnvironmentRequest(python="python3.10"), tmp_path / "t", uv_cache)
    assert result.python_version.startswith("3.10.")
    assert result.venv == tmp_path / "t" / "venv"
    assert _run(result.python, "import sys; print(sys.version_info[:2])") == "(3, 10)"
    assert _run(result.python, "import sys; print(sys.prefix)") == str(result.venv)
    assert f"python {result.python_version} ({PYENV_310[-1]})" in console.text()
    assert "requirements: none" in console.text()
    assert result.packages == 0 and result.frozen.strip() == ""


def test_missing_python_fails_clearly(tmp_path: Path, uv_cache: Path) -> None:
    with pytest.raises(StageError) as err:
        _prepare(EnvironmentRequest(python="3.99"), tmp_path / "t", uv_cache)
    assert err.value.reason.startswith("python 3.99 not found on this machine")


def test_requirements_cold_then_warm_from_the_resolution_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    req = EnvironmentRequest(python="3.11", requirements=SMALL)
    cold, console = _prepare(req, tmp_path / "t1", cache)
    assert not cold.cache_hit
    names = {line.split("==")[0].lower() for line in cold.frozen.splitlines() if line}
    assert names == {"six", "idna", "packaging"} and cold.packages == 3
    assert "requirements: skipping 'mine @ file:///home/me/mine'" in console.text()
    assert _run(cold.python, "import six, idna, packaging; print('ok')") == "ok"
    assert len(list((cache / "resolved").glob("*.txt"))) == 1

    warm, console = _prepare(req, tmp_path / "t2", cache)
    assert warm.cache_hit and warm.frozen == cold.frozen
    assert warm.seconds < cold.seconds, (warm.seconds, cold.seconds)
    assert "3 packages, ready in" in console.text() and "(cache hit)" in console.text()
    assert _run(warm.python, "import six; print(six.__name__)") == "six"
    # the warm venv's files are hardlinks into uv's cache, not copies
    six_py = next((tmp_path / "t2" / "venv").glob("lib/python*/site-packages/six.py"))
    assert six_py.stat().st_nlink > 1


def test_requirements_txt_from_the_checkout(tmp_path: Path, uv_cache: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "requirements.txt").write_text("six==1.16.0\n")
    req = EnvironmentRequest(python="3.11", source_root=src)
    result, console = _prepare(req, tmp_path / "t", uv_cache)
    assert result.frozen.strip() == "six==1.16.0"
    assert "requirements: 1 from requirements.txt" in console.text()


def test_uv_lock_from_the_checkout(tmp_path: Path, uv_cache: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1"\nrequires-python = ">=3.9"\n'
        'dependencies = ["six==1.16.0"]\n'
    )
    (src / "requirements.txt").write_text("idna\n")  # the lock wins
    uv = default_uv()
    assert uv is not None
    subprocess.run([str(uv), "lock", "--quiet", "--directory", str(src)], check=True, timeout=120)
    result, console = _prepare(
        EnvironmentRequest(python="3.11", source_root=src), tmp_path / "t", uv_cache
    )
    assert result.frozen.strip() == "six==1.16.0"
    assert "from uv.lock" in console.text()


def test_bad_requirement_fails_with_uvs_reason(tmp_path: Path, uv_cache: Path) -> None:
    req = EnvironmentRequest(python="3.11", requirements="nonexistent-pkg-zzz==1\n")
    with pytest.raises(StageError) as err:
        _prepare(req, tmp_path / "t", uv_cache)
    assert err.value.reason.startswith("requirements failed: ")
    assert "nonexistent-pkg-zzz" in err.value.reason
    assert "No solution found" in err.value.reason


@pytest.mark.slow
def test_pip_when_asked_for(tmp_path: Path) -> None:
    req = EnvironmentRequest(python="3.11", requirements="six==1.16.0\n", package_manager="pip")
    cold, _ = _prepare(req, tmp_path / "t1", tmp_path / "cache")
    assert "six==1.16.0" in cold.frozen.splitlines() and not cold.cache_hit
    assert _run(cold.python, "import six; print(six.__version__)") == "1.16.0"
    warm, _ = _prepare(req, tmp_path / "t2", tmp_path / "cache")
    assert warm.cache_hit and "six==1.16.0" in warm.frozen.splitlines()


def test_unknown_package_manager_is_refused(tmp_path: Path, uv_cache: Path) -> None:
    req = EnvironmentRequest(python="3.11", package_manager="conda")
    with pytest.raises(StageError, match="package manager 'conda' is not supported"):
        _prepare(req, tmp_path / "t", uv_cache)
