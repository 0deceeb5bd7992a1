"""Finding the exact Python a task asks for: PATH, pyenv, uv, and only then ``uv python install``.

A task records its interpreter as ``script.binary`` ("python3.11", "python3", "3.10", or an
absolute path). Every candidate is *run* once to learn its real version and executable, so a
pyenv shim (a shell script that may dispatch to another version, or refuse) is never trusted:
shim directories are skipped and pyenv's real binaries under ``versions/*/bin`` are used instead.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent.errors import StageError

log = structlog.get_logger()

STAGE = "environment"
PROBE_TIMEOUT = 15.0  # seconds to run `python -c ...` once
UV_FIND_TIMEOUT = 60.0
UV_INSTALL_TIMEOUT = 600.0
_SHIM_SNIFF_BYTES = 512
_SPEC = re.compile(r"^(?:python)?(\d+)?(?:\.(\d+))?(?:\.(\d+))?$")
_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.executable)"
_UV_ERROR_PREFIXES = ("error:", "\u00d7", "╰─▶", "caused by:", "cause:", "fatal:")


@dataclass(frozen=True)
class PythonSpec:
    """What a task asks for: a version prefix (3 / 3.11 / 3.11.7) or an explicit path."""

    major: int = 3
    minor: int | None = None
    patch: int | None = None
    path: str = ""

    @property
    def version(self) -> str:
        parts = [self.major, self.minor, self.patch]
        return ".".join(str(p) for p in parts if p is not None)

    def matches(self, version: str) -> bool:
        have = version.split(".")
        want = self.version.split(".")
        return have[: len(want)] == want

    def __str__(self) -> str:
        return self.path or self.version


@dataclass(frozen=True)
class Interpreter:
    path: Path  # a real executable, never a shim
    version: str  # "3.11.7"
    found_in: str  # "PATH", "pyenv", "uv", "uv install", "path"


def parse_spec(spec: str, default: str = "") -> PythonSpec:
    """``"python3.11"`` / ``"3.11"`` / ``"python3"`` / ``""`` (→ ``default`` or the agent's)."""
    text = spec.strip()
    if text.startswith("/"):
        return PythonSpec(path=text)
    text = text or default or f"{sys.version_info.major}.{sys.version_info.minor}"
    match = _SPEC.match(text.lower())
    if not match or (match.group(1) is None and text.lower() != "python"):
        raise StageError(
            f"python {spec!r} is not an interpreter I understand "
            "(use e.g. 'python3.11', '3.11' or an absolute path)",
            stage=STAGE,
        )
    major, minor, patch = (int(g) if g is not None else None for g in match.groups())
    return PythonSpec(major=major if major is not None else 3, minor=minor, patch=patch)


def candidate_names(spec: PythonSpec) -> list[str]:
    """Executable names to look for: ``python3.11`` for 3.11(.x), ``python3`` for 3."""
    if spec.minor is not None:
        return [f"python{spec.major}.{spec.minor}"]
    return [f"python{spec.major}"]


def find_interpreter(spec: str, *, search_pyenv: bool = True, uv: Path | None = None) -> Path:
    """The path of a real interpreter for ``spec``; StageError when there is none."""
    return locate_interpreter(spec, search_pyenv=search_pyenv, uv=uv).path


def locate_interpreter(
    spec: str,
    *,
    search_pyenv: bool = True,
    uv: Path | None = None,
    allow_install: bool = True,
    path_env: str | None = None,
) -> Interpreter:
    """Look in PATH (shims skipped), pyenv's versions, ``uv python find``; then install."""
    wanted = parse_spec(spec)
    if wanted.path:
        return _explicit(wanted.path)
    searches: list[tuple[str, Iterator[Path]]] = [("PATH", _on_path(wanted, path_env))]
    if search_pyenv:
        searches.append(("pyenv", _in_pyenv(wanted)))
    for where, candidates in searches:
        for candidate in candidates:
            found = _accept(candidate, wanted, where)
            if found:
                return found
    looked = "PATH, pyenv, uv" if search_pyenv else "PATH, uv"
    if uv is not None:
        found = _uv_find(uv, wanted)
        if found:
            return found
    if uv is None or not allow_install:
        raise StageError(
            f"python {wanted} not found on this machine (looked in {looked})", stage=STAGE
        )
    return _uv_install(uv, wanted, looked)


def _explicit(path: str) -> Interpreter:
    probed = probe(Path(path))
    if probed is None:
        raise StageError(f"python {path} does not exist or does not run", stage=STAGE)
    return Interpreter(path=probed[1], version=probed[0], found_in="path")


def _accept(candidate: Path, wanted: PythonSpec, where: str) -> Interpreter | None:
    probed = probe(candidate)
    if probed is None or not wanted.matches(probed[0]):
        return None
    version, executable = probed
    # sys.executable of a venv interpreter is the venv's own: fine as a base for `uv venv`.
    path = executable if executable.is_file() else candidate
    return Interpreter(path=path, version=version, found_in=where)


def _on_path(wanted: PythonSpec, path_env: str | None) -> Iterator[Path]:
    dirs = (os.environ.get("PATH", "") if path_env is None else path_env).split(os.pathsep)
    for directory in dirs:
        if not directory or _is_shim_dir(Path(directory)):
            continue
        for name in candidate_names(wanted):
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_shim(candidate):
                yield candidate


def _in_pyenv(wanted: PythonSpec) -> Iterator[Path]:
    root = pyenv_root()
    versions = root / "versions"
    if not versions.is_dir():
        return
    entries = [v for v in versions.iterdir() if not (v / "pyvenv.cfg").exists()]  # no venvs
    for entry in sorted(entries, key=lambda v: _version_key(v.name), reverse=True):
        if not wanted.matches(entry.name):
            continue
        for name in candidate_names(wanted):
            candidate = entry / "bin" / name
            if candidate.is_file():
                yield candidate


def pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _is_shim_dir(directory: Path) -> bool:
    return (directory.name == "shims" and (directory.parent / "versions").is_dir()) or (
        directory.resolve() == (pyenv_root() / "shims").resolve()
    )


def _is_shim(path: Path) -> bool:
    """A pyenv (or asdf) shim is a small shell script that execs the version manager."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_SHIM_SNIFF_BYTES)
    except OSError:
        return True
    return head.startswith(b"#!") and (b"pyenv" in head or b"asdf" in head)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.\-]", name))


@functools.lru_cache(maxsize=128)
def _probe_cached(path: str, mtime_ns: int) -> tuple[str, Path] | None:
    del mtime_ns  # part of the cache key only: a replaced binary is probed again
    try:
        done = subprocess.run(
            [path, "-c", _PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("interpreter.probe_failed", path=path, error=str(exc))
        return None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) < 2:
        return None
    return lines[0], Path(lines[1])


def probe(path: Path) -> tuple[str, Path] | None:
    """Run ``path`` once: its ``(version, sys.executable)``, or None if it does not run."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _probe_cached(str(path), mtime)


def _uv_find(uv: Path, wanted: PythonSpec) -> Interpreter | None:
    done = _run_uv(uv, ["python", "find", wanted.version], UV_FIND_TIMEOUT)
    if done is None or done.returncode != 0 or not done.stdout.strip():
        return None
    return _accept(Path(done.stdout.strip().splitlines()[-1]), wanted, "uv")


def _uv_install(uv: Path, wanted: PythonSpec, looked: str) -> Interpreter:
    done = _run_uv(uv, ["python", "install", wanted.version], UV_INSTALL_TIMEOUT)
    if done is not None and done.returncode == 0:
        found = _uv_find(uv, wanted)
        if found:
            return Interpreter(path=found.path, version=found.version, found_in="uv install")
    why = "timed out" if done is None else uv_error_summary(done.stderr) or "uv failed"
    raise StageError(
        f"python {wanted} not found on this machine (looked in {looked}) and could not be "
        f"installed: {why}",
        stage=STAGE,
    )


def _run_uv(
    uv: Path, args: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str] | None:
    env = {**os.environ, "NO_COLOR": "1", "UV_NO_PROGRESS": "1"}
    try:
        return subprocess.run(
            [str(uv), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("interpreter.uv_failed", args=list(args), error=str(exc))
        return None


def uv_error_summary(stderr: str, max_lines: int = 4, max_chars: int = 400) -> str:
    """uv's key error lines (``error:``, ``cause:``, the fancy-report arrows), undecorated."""
    keep: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip().lstrip("│").strip()
        if not line:
            continue
        lowered = line.lower()
        if lowered.startswith(_UV_ERROR_PREFIXES):
            cleaned = line
            for prefix in ("\u00d7", "╰─▶"):
                cleaned = cleaned.removeprefix(prefix).strip()
            keep.append(cleaned)
        if len(keep) >= max_lines:
            break
    if not keep:
        keep = [ln.strip() for ln in stderr.splitlines() if ln.strip()][-max_lines:]
    return " ".join(keep)[:max_chars]
