"""The environment stage's installers: uv (venv, resolve, sync, freeze, lock export) and the
virtualenv + pip fallback, each run with a timeout in its own process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from agent.errors import StageError
from agent.pipeline.console import Console
from agent.pipeline.interpreters import Interpreter, uv_error_summary
from agent.pipeline.paths import remove_path
from agent.pipeline.requirements import Requirements

log = structlog.get_logger()

STAGE = "environment"
INSTALL_TIMEOUT = 3600.0  # seconds for one resolve or install
VENV_TIMEOUT = 300.0
FREEZE_TIMEOUT = 120.0
KILL_WAIT = 10.0
_TAIL_CHARS = 2000
_PIP_TAIL_LINES = 4


class Installer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    def create(self, interp: Interpreter, venv: Path) -> Path: ...

    def resolve_and_install(self, python: Path, reqs: Requirements) -> str: ...

    def install_pinned(self, python: Path, pinned: Path) -> None: ...

    def freeze(self, python: Path) -> str: ...


class UvInstaller:
    name = "uv"

    def __init__(
        self, uv: Path, env: Mapping[str, str], task_dir: Path, cache: Path, timeout: float
    ) -> None:
        cache.mkdir(parents=True, exist_ok=True)
        same_fs = cache.stat().st_dev == task_dir.stat().st_dev
        self.env = {**env, "UV_CACHE_DIR": str(cache)}
        self.env.setdefault("UV_LINK_MODE", "hardlink" if same_fs else "copy")
        self._uv = str(uv)
        self._task_dir = task_dir
        self._timeout = timeout

    def create(self, interp: Interpreter, venv: Path) -> Path:
        remove_path(venv)
        args = ["venv", "--quiet", "--python", str(interp.path), str(venv)]
        done = self._run(args, VENV_TIMEOUT, "creating the venv")
        if done.returncode != 0:
            reason = uv_error_summary(done.stderr) or _tail(done.stderr)
            log.warning("environment.uv_venv_failed", reason=reason)
            return _virtualenv(interp, venv, seed=False, uv_reason=reason)
        return venv_python(venv)

    def resolve_and_install(self, python: Path, reqs: Requirements) -> str:
        source = self._task_dir / "requirements.in"
        source.write_text(reqs.text, encoding="utf-8")
        pinned = self._task_dir / "requirements.pinned.txt"
        self._check(
            [
                "pip",
                "compile",
                "--quiet",
                "--python",
                str(python),
                "--no-header",
                "--no-annotate",
                "--emit-index-url",
                "--emit-find-links",
                "-o",
                str(pinned),
                str(source),
            ],
            "resolving",
        )
        self._check(self._sync_args(python, pinned), "installing")
        return pinned.read_text(encoding="utf-8")

    def install_pinned(self, python: Path, pinned: Path) -> None:
        args = self._sync_args(python, pinned)
        # Everything may already be in uv's cache: try without the network first.
        if self._run([*args, "--offline"], self._timeout, "installing").returncode == 0:
            return
        self._check(args, "installing")

    @staticmethod
    def _sync_args(python: Path, pinned: Path) -> list[str]:
        return ["pip", "sync", "--quiet", "--python", str(python), str(pinned)]

    def freeze(self, python: Path) -> str:
        done = self._check(["pip", "freeze", "--python", str(python)], "freezing", FREEZE_TIMEOUT)
        return done.stdout

    def export_lock(self, root: Path, console: Console) -> str | None:
        args = [
            "export",
            "--frozen",
            "--no-hashes",
            "--no-header",
            "--no-emit-project",
            "--directory",
            str(root),
        ]
        done = self._run(args, self._timeout, "exporting uv.lock")
        if done.returncode != 0:
            why = uv_error_summary(done.stderr) or _tail(done.stderr)
            console.info(f"requirements: uv.lock could not be exported ({why}); ignoring it")
            return None
        return done.stdout

    def _check(
        self, args: Sequence[str], what: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = self._run(args, timeout or self._timeout, what)
        if done.returncode != 0:
            reason = uv_error_summary(done.stderr) or _tail(done.stderr)
            raise StageError(f"requirements failed: {reason}", stage=STAGE)
        return done

    def _run(
        self, args: Sequence[str], timeout: float, what: str
    ) -> subprocess.CompletedProcess[str]:
        return run_installer([self._uv, *args], self.env, self._task_dir, timeout, what)


class PipInstaller:
    name = "pip"

    def __init__(self, env: Mapping[str, str], task_dir: Path, cache: Path, timeout: float) -> None:
        self.env = {**env, "PIP_CACHE_DIR": str(cache)}
        self._task_dir = task_dir
        self._timeout = timeout

    def create(self, interp: Interpreter, venv: Path) -> Path:
        remove_path(venv)
        return _virtualenv(interp, venv, seed=True, uv_reason="")

    def resolve_and_install(self, python: Path, reqs: Requirements) -> str:
        source = self._task_dir / "requirements.in"
        source.write_text(reqs.text, encoding="utf-8")
        self._pip(python, ["install", "-r", str(source)], "installing")
        options = [line for line in reqs.lines if line.startswith("-") and " " in line]
        options = [o for o in options if o.split(" ", 1)[0] not in {"-e", "--editable"}]
        return "".join(f"{o}\n" for o in options) + self.freeze(python)

    def install_pinned(self, python: Path, pinned: Path) -> None:
        self._pip(python, ["install", "--no-deps", "-r", str(pinned)], "installing")

    def freeze(self, python: Path) -> str:
        done = self._pip(
            python,
            [
                "freeze",
                "--all",
                "--exclude",
                "pip",
                "--exclude",
                "setuptools",
                "--exclude",
                "wheel",
            ],
            "freezing",
        )
        return done.stdout

    def _pip(
        self, python: Path, args: Sequence[str], what: str
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(python), "-m", "pip", *args]
        done = run_installer(cmd, self.env, self._task_dir, self._timeout, what)
        if done.returncode != 0:
            raise StageError(f"requirements failed: {_pip_reason(done.stderr)}", stage=STAGE)
        return done


def _virtualenv(interp: Interpreter, venv: Path, *, seed: bool, uv_reason: str) -> Path:
    """Create ``venv`` with the virtualenv package (the fallback when uv cannot)."""
    import virtualenv

    args = [str(venv), "--python", str(interp.path), "--quiet"]
    if not seed:
        args.append("--no-seed")
    try:
        virtualenv.cli_run(args, setup_logging=False)
    # virtualenv raises a variety of errors (RuntimeError, its own ProcessCallFailed, OSError)
    # for an interpreter it cannot use; each one means the same thing to the task: no venv.
    except Exception as exc:
        why = uv_reason or str(exc) or type(exc).__name__
        log.warning("environment.virtualenv_failed", error=str(exc))
        raise StageError(f"could not create the environment: {why}", stage=STAGE) from exc
    return venv_python(venv)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def run_installer(
    cmd: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Run an installer in its own process group; kill the whole group on timeout."""
    try:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise StageError(f"could not run {cmd[0]} ({what}): {exc}", stage=STAGE) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=KILL_WAIT)
        raise StageError(
            f"requirements failed: {what} timed out after {timeout:.0f} s", stage=STAGE
        ) from exc
    log.debug("environment.installer", cmd=list(cmd)[:4], returncode=proc.returncode)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def _pip_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return " ".join((errors or lines)[-_PIP_TAIL_LINES:]) or "pip failed"


def _tail(text: str) -> str:
    return text.strip()[-_TAIL_CHARS:] or "no output"
