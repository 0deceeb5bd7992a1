"""Environment stage: a fresh venv per task, packages linked from uv's global cache.

The interpreter is the exact one the task asks for (:mod:`agent.pipeline.interpreters`). The
requirements are the task's recorded ``requirements.pip``, else the checkout's ``uv.lock`` or
``requirements.txt`` (:mod:`agent.pipeline.requirements` makes them installable). A resolution
is cached under ``cache_dir/resolved`` by a hash of (python version, requirements, platform,
index settings): a warm start skips resolving and installs the pinned list straight from uv's
cache (hardlinked when the cache is on the same filesystem): a link step, not a download.

uv is used when it is available; ``virtualenv`` + ``pip`` otherwise (or when the operator asks
for pip): :mod:`agent.pipeline.installers`. Every installer runs with a timeout in its own
process group, its output captured; a failure becomes a StageError carrying its key error lines.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from agent.errors import StageError
from agent.pipeline.console import Console
from agent.pipeline.installers import INSTALL_TIMEOUT, STAGE, Installer, PipInstaller, UvInstaller
from agent.pipeline.interpreters import Interpreter, locate_interpreter
from agent.pipeline.requirements import (
    Requirements,
    count_frozen,
    filter_requirements,
    platform_tag,
    resolution_key,
)

log = structlog.get_logger()

VENV_DIR = "venv"
RESOLVED_DIR = "resolved"  # under cache_dir: pinned lists by resolution key
UV_CACHE = "uv"
PIP_CACHE = "pip"
RESOLUTION_TTL = 7 * 24 * 3600.0  # seconds a cached resolution is reused
# Variables of the agent's own process that would point an installer at the wrong environment.
_INSTALLER_SCRUB = (
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PYTHONHOME",
    "PYTHONPATH",
    "UV_PROJECT_ENVIRONMENT",
)


@dataclass(frozen=True)
class EnvironmentRequest:
    python: str = ""  # script.binary: "python3.11", "python3", "3.10", "" (agent default)
    requirements: str = ""  # the task's requirements.pip text; "" => look in the source
    source_root: Path | None = None  # for the uv.lock / requirements.txt fallback
    package_manager: str = "uv"  # "uv" | "pip"
    extra_env: Mapping[str, str] = field(default_factory=dict)  # e.g. SSL_CERT_FILE


@dataclass(frozen=True)
class PreparedEnvironment:
    venv: Path
    python: Path  # the venv's interpreter
    python_version: str  # "3.11.7"
    frozen: str  # `uv pip freeze` output
    packages: int
    cache_hit: bool
    seconds: float


class Environment(Protocol):
    def prepare(
        self, req: EnvironmentRequest, *, task_dir: Path, cache_dir: Path, console: Console
    ) -> PreparedEnvironment: ...


def default_uv() -> Path | None:
    """uv from the ``uv`` package, else from PATH; None when there is none."""
    try:
        import uv as uv_package

        return Path(uv_package.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        return Path(found) if found else None


def build_venv(
    req: EnvironmentRequest,
    installer: Installer,
    interp: Interpreter,
    *,
    task_dir: Path,
    cache_dir: Path,
    platform: str,
    started: float,
    console: Console,
    **log_fields: object,
) -> PreparedEnvironment:
    """The venv at ``task_dir/venv`` from ``interp``, requirements installed through
    ``installer`` (resolutions cached per interpreter, requirements and ``platform``), reported
    on the console. Shared by the host and the container environments."""
    venv = task_dir.absolute() / VENV_DIR
    reqs = gather_requirements(req, installer, console)
    python = installer.create(interp, venv)
    cache_hit = False
    if reqs:
        key = resolution_key(interp.version, reqs.text, platform, installer.name, installer.env)
        pinned = cache_dir.absolute() / RESOLVED_DIR / f"{key}.txt"
        cache_hit = install_requirements(installer, python, reqs, pinned, console)
    frozen = installer.freeze(python)
    seconds = time.monotonic() - started
    count = count_frozen(frozen)
    how = " (cache hit)" if cache_hit else ""
    console.info(
        f"environment: python {interp.version}, {count} packages, ready in {seconds:.1f} s{how}"
    )
    log.info(
        "environment.ready",
        python=interp.version,
        packages=count,
        cache_hit=cache_hit,
        seconds=seconds,
        installer=installer.name,
        **log_fields,
    )
    return PreparedEnvironment(
        venv=venv,
        python=python,
        python_version=interp.version,
        frozen=frozen,
        packages=count,
        cache_hit=cache_hit,
        seconds=seconds,
    )


class VenvEnvironment:
    """A fresh venv per task under ``task_dir/venv`` (uv, or virtualenv + pip)."""

    def __init__(self, uv: Path | None = None, *, timeout: float = INSTALL_TIMEOUT) -> None:
        self._uv = uv if uv is not None else default_uv()
        if self._uv is not None and not self._uv.is_file():
            self._uv = None
        self._timeout = timeout

    def prepare(
        self, req: EnvironmentRequest, *, task_dir: Path, cache_dir: Path, console: Console
    ) -> PreparedEnvironment:
        started = time.monotonic()
        try:
            installer = self._installer(req, task_dir, cache_dir, console)
            interp = locate_interpreter(req.python, uv=self._uv)
            console.info(f"python {interp.version} ({interp.path})")
            return build_venv(
                req, installer, interp, task_dir=task_dir, cache_dir=cache_dir,
                platform=platform_tag(), started=started, console=console,
            )  # fmt: skip
        except OSError as exc:  # disk full, permissions: the task cannot run here
            raise StageError(f"could not create the environment: {exc}", stage=STAGE) from exc

    def _installer(
        self, req: EnvironmentRequest, task_dir: Path, cache_dir: Path, console: Console
    ) -> Installer:
        task_dir.mkdir(parents=True, exist_ok=True)
        base = installer_env(req.extra_env)
        if req.package_manager not in {"uv", "pip"}:
            raise StageError(
                f"package manager {req.package_manager!r} is not supported (use uv or pip)",
                stage=STAGE,
            )
        if req.package_manager == "uv" and self._uv is not None:
            return UvInstaller(
                self._uv, base, task_dir, cache_dir.absolute() / UV_CACHE, self._timeout
            )
        if req.package_manager == "uv":
            console.info("uv is not available on this agent: using virtualenv and pip")
        return PipInstaller(base, task_dir, cache_dir.absolute() / PIP_CACHE, self._timeout)


def installer_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The installers' environment: the agent's, scrubbed, plus the request's extras."""
    env = {k: v for k, v in os.environ.items() if k not in _INSTALLER_SCRUB}
    env.update(extra)
    env.update({"NO_COLOR": "1", "UV_NO_PROGRESS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    # Trust the system CA store (where a corporate CA lives); SSL_CERT_FILE still wins.
    env.setdefault("UV_NATIVE_TLS", "1")
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # interpreters come from locate_interpreter
    return env


def gather_requirements(
    req: EnvironmentRequest, installer: Installer, console: Console
) -> Requirements:
    """The task's requirements, else the checkout's uv.lock / requirements.txt, filtered."""
    if req.requirements.strip():
        reqs = filter_requirements(req.requirements)
        origin = "the task"
    else:
        text, origin = _from_source(req.source_root, installer, console)
        reqs = filter_requirements(text, base_dir=req.source_root) if text else Requirements(())
    for line, why in reqs.skipped:
        console.info(f"requirements: skipping {line!r}: {why}")
    if reqs:
        console.info(f"requirements: {reqs.packages} from {origin}")
    else:
        console.info("requirements: none")
    return reqs


def _from_source(root: Path | None, installer: Installer, console: Console) -> tuple[str, str]:
    if root is None:
        return "", ""
    if (root / "uv.lock").is_file() and isinstance(installer, UvInstaller):
        text = installer.export_lock(root, console)
        if text is not None:
            return text, "uv.lock"
    requirements_txt = root / "requirements.txt"
    if requirements_txt.is_file():
        try:
            return requirements_txt.read_text(encoding="utf-8"), "requirements.txt"
        except (OSError, UnicodeDecodeError) as exc:
            raise StageError(
                f"requirements failed: cannot read requirements.txt: {exc}", stage=STAGE
            ) from exc
    return "", ""


def install_requirements(
    installer: Installer, python: Path, reqs: Requirements, pinned: Path, console: Console
) -> bool:
    """Install pinned from the resolution cache if there; else resolve, install, cache. Hit?"""
    if _fresh(pinned):
        try:
            installer.install_pinned(python, pinned)
            return True
        except StageError as exc:
            console.info(f"cached resolution did not install ({exc.reason}); resolving again")
            pinned.unlink(missing_ok=True)
    started = time.monotonic()
    resolved = installer.resolve_and_install(python, reqs)
    pinned.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(pinned, resolved)
    console.info(
        f"installed {reqs.packages} requirements ({installer.name}, "
        f"{time.monotonic() - started:.1f} s)"
    )
    return False


def _fresh(pinned: Path) -> bool:
    """A cached resolution is reused for RESOLUTION_TTL: unpinned requirements move on."""
    try:
        return time.time() - pinned.stat().st_mtime < RESOLUTION_TTL
    except FileNotFoundError:
        return False


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
