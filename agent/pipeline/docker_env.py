"""The environment stage inside a task's container: the image's Python, the agent's uv.

The same logic as :class:`~agent.pipeline.environment.VenvEnvironment` (requirements from the
task or the checkout, the resolution cache, ``uv pip compile`` then ``uv pip sync``, the freeze),
with every command run *in the container* instead of on the host: the installer is the
environment stage's own uv installer with its command runner swapped for a docker exec.

What the container sees, mounted by :mod:`agent.pipeline.container` at the same paths as on the
host: the task dir (checkout, venv, config files) and uv's cache; the uv binary itself at
:data:`UV_IN_CONTAINER`. The venv is built with the image's interpreter, so compiled wheels match
the image's libc and Python; packages are copied from the cache (hard links cannot cross the
bind mounts), which still costs no download and no build on a warm start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from agent.errors import StageError
from agent.pipeline.console import Console
from agent.pipeline.environment import (
    UV_CACHE,
    EnvironmentRequest,
    PreparedEnvironment,
    build_venv,
)
from agent.pipeline.installers import FREEZE_TIMEOUT, VENV_TIMEOUT, UvInstaller, venv_python
from agent.pipeline.interpreters import (
    Interpreter,
    PythonSpec,
    candidate_names,
    parse_spec,
    uv_error_summary,
)
from agent.pipeline.requirements import INDEX_ENV_VARS, count_frozen

log = structlog.get_logger()

STAGE = "environment"
UV_IN_CONTAINER = "/opt/conveyor/bin/uv"
IMAGE_DEFAULT_PYTHON = "3"  # a task that names no interpreter gets the image's python3
PROBE_TIMEOUT = 30.0
PINNED_COPY = "requirements.cached.txt"  # the cached resolution, copied where uv can see it
# Prints "<version> <sys.executable>" for the first name (or path) that runs; exit 127 if none.
_PROBE = (
    'for n in "$@"; do p=$(command -v "$n") || continue; '
    'exec "$p" -c "import sys; print(\'%d.%d.%d\' % sys.version_info[:3], sys.executable)"; '
    "done; exit 127"
)
_TAIL_CHARS = 2000


class Exec(Protocol):
    """Run a command in the task's container; the completed process (stdout, stderr, code)."""

    def __call__(
        self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float, what: str
    ) -> subprocess.CompletedProcess[str]: ...


def container_installer_env(extra: Mapping[str, str], cache: Path) -> dict[str, str]:
    """uv's environment in the container: the container's own (from its creation) plus these.

    Not the agent's environment (its PATH and HOME mean nothing in the image); only the index
    settings an operator gave the agent, which must reach every installer.
    """
    env = {k: v for k, v in os.environ.items() if k in INDEX_ENV_VARS}
    env.update(extra)
    env.update(
        {
            "NO_COLOR": "1",
            "UV_NO_PROGRESS": "1",
            "UV_CACHE_DIR": str(cache),
            "UV_LINK_MODE": "copy",  # the cache and the venv are different bind mounts
            "UV_PYTHON_DOWNLOADS": "never",  # the image's interpreter or nothing
            "UV_NATIVE_TLS": "1",
        }
    )
    return env


class _ContainerUv(UvInstaller):
    """The environment stage's uv installer, run in the container through ``exec``."""

    def __init__(
        self, run: Exec, env: Mapping[str, str], task_dir: Path, cache: Path, timeout: float
    ) -> None:
        super().__init__(Path(UV_IN_CONTAINER), env, task_dir, cache, timeout)
        self.env = container_installer_env(env, cache)
        self._exec = run

    def create(self, interp: Interpreter, venv: Path) -> Path:
        shutil.rmtree(venv, ignore_errors=True)
        args = ["venv", "--quiet", "--python", str(interp.path), str(venv)]
        done = self._run(args, VENV_TIMEOUT, "creating the venv")
        if done.returncode != 0:
            reason = uv_error_summary(done.stderr) or _tail(done.stderr)
            raise StageError(f"could not create the environment: {reason}", stage=STAGE)
        return venv_python(venv)

    def install_pinned(self, python: Path, pinned: Path) -> None:
        # The resolution cache is the host's; the container sees only the task dir.
        visible = self._task_dir / PINNED_COPY
        shutil.copyfile(pinned, visible)
        super().install_pinned(python, visible)

    def _run(
        self, args: Sequence[str], timeout: float, what: str
    ) -> subprocess.CompletedProcess[str]:
        return self._exec([UV_IN_CONTAINER, *args], env=self.env, timeout=timeout, what=what)


def find_python(run: Exec, wanted: str, console: Console) -> Interpreter:
    """The image's interpreter for ``wanted`` ("python3.11", "3.10", a path, "": python3).

    When the image has no such interpreter the image's ``python3`` is used, and the console
    says so: the image decides its Python, the task records where it last ran.
    """
    spec = parse_spec(wanted, default=IMAGE_DEFAULT_PYTHON)
    found = _probe(run, spec)
    if found is not None:
        return found
    fallback = _probe(run, PythonSpec(major=3))
    if fallback is None:
        raise StageError(
            f"the image has no python{'' if spec.path else spec.version} and no python3 on its "
            "PATH (or use --run-as-is with an image that runs the entry point another way)",
            stage=STAGE,
        )
    console.info(f"python {spec} is not in the image: using its python3 ({fallback.version})")
    return fallback


def _probe(run: Exec, spec: PythonSpec) -> Interpreter | None:
    names = [spec.path] if spec.path else candidate_names(spec)
    done = run(["/bin/sh", "-c", _PROBE, "probe", *names], env={}, timeout=PROBE_TIMEOUT, what="")
    parts = done.stdout.strip().split(maxsplit=1)
    if done.returncode != 0 or len(parts) != 2:
        return None
    version, executable = parts
    if not spec.path and not spec.matches(version):
        return None
    return Interpreter(path=Path(executable), version=version, found_in="image")


def prepare_in_container(
    req: EnvironmentRequest,
    *,
    run: Exec,
    task_dir: Path,
    cache_dir: Path,
    image_id: str,
    console: Console,
    timeout: float,
) -> PreparedEnvironment:
    """A venv for the task in ``task_dir/venv``, built in the container by the mounted uv."""
    started = time.monotonic()
    task_dir = task_dir.absolute()
    installer = _ContainerUv(run, req.extra_env, task_dir, cache_dir.absolute() / UV_CACHE, timeout)
    interp = find_python(run, req.python, console)
    console.info(f"python {interp.version} ({interp.path}, from the image)")
    # The image (not this host) decides what a resolution is valid for.
    return build_venv(
        req, installer, interp, task_dir=task_dir, cache_dir=cache_dir, platform=image_id,
        started=started, console=console, container=True,
    )  # fmt: skip


def as_is(
    req: EnvironmentRequest, *, run: Exec, cache_dir: Path, console: Console
) -> PreparedEnvironment:
    """No environment step: the image's interpreter as it is (its packages recorded)."""
    started = time.monotonic()
    if req.requirements.strip():
        console.info("requirements: not installed (run as is: the image's packages only)")
    interp = find_python(run, req.python, console)
    env = container_installer_env(req.extra_env, cache_dir.absolute() / UV_CACHE)
    done = run(
        [UV_IN_CONTAINER, "pip", "freeze", "--python", str(interp.path)],
        env=env,
        timeout=FREEZE_TIMEOUT,
        what="freezing",
    )
    frozen = done.stdout if done.returncode == 0 else ""
    count = count_frozen(frozen)
    console.info(
        f"environment: the image's python {interp.version} as it is ({interp.path}, "
        f"{count} packages)"
    )
    return PreparedEnvironment(
        venv=interp.path.parent.parent,
        python=interp.path,
        python_version=interp.version,
        frozen=frozen,
        packages=count,
        cache_hit=True,
        seconds=time.monotonic() - started,
    )


def _tail(text: str) -> str:
    return text.strip()[-_TAIL_CHARS:] or "no output"
