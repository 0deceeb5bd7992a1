"""Requirements as recorded by ClearML, made installable; and the resolution cache key.

Pure functions only. ClearML records ``requirements.pip`` from the machine that ran the task:
comment headers ("# Python 3.11.7 ..."), packages installed from local directories
(``pkg @ file:///home/me/pkg``), editable installs, Debian's phantom ``pkg-resources==0.0.0``.
Those lines cannot be installed elsewhere; they are skipped with a reason the console shows.
Requirements read from the task's own checkout (``requirements.txt``, an exported ``uv.lock``) may
name local paths *inside* the checkout: those are kept and made absolute.
"""

from __future__ import annotations

import hashlib
import json
import platform
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Installer settings that change what a resolution produces: part of the cache key.
INDEX_ENV_VARS = (
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_PRERELEASE",
    "UV_INDEX_STRATEGY",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
)
_PATH_OPTIONS = ("-r", "--requirement", "-c", "--constraint")
_EDITABLE_OPTIONS = ("-e", "--editable")
_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
_PHANTOMS = frozenset({"pkg-resources==0.0.0", "pkg_resources==0.0.0"})
_INLINE_COMMENT = re.compile(r"\s+#.*$")
_DIRECT_URL = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._\[\], -]*?)\s*@\s*(?P<target>\S.*)$")

WHY_LOCAL_FILE = "installed from a local file on the machine that recorded the task"
WHY_LOCAL_PATH = "a local path that only exists on the machine that recorded the task"
WHY_PHANTOM = "not a real package (a Debian pip freeze artefact)"
WHY_OUTSIDE = "a local path outside the checkout"


@dataclass(frozen=True)
class Requirements:
    lines: tuple[str, ...]  # what the installer gets: requirements and options
    skipped: tuple[tuple[str, str], ...] = ()  # (line, why)

    @property
    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    @property
    def packages(self) -> int:
        return sum(1 for line in self.lines if not line.startswith("-") or _is_editable(line))

    def __bool__(self) -> bool:
        return self.packages > 0


def filter_requirements(text: str, base_dir: Path | None = None) -> Requirements:
    """Drop comments and what cannot be installed here; keep everything else verbatim.

    ``base_dir`` is the directory the text came from when it belongs to the checkout: relative
    paths (``-r base.txt``, ``-e .``, ``./pkg``) are then made absolute under it. Without it (the
    task's recorded requirements) local paths are skipped.
    """
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    for line in _logical_lines(text):
        result = _filter_line(line, base_dir)
        if isinstance(result, tuple):
            skipped.append(result)
        elif result:
            kept.append(result)
    return Requirements(lines=tuple(kept), skipped=tuple(skipped))


def _logical_lines(text: str) -> list[str]:
    """Physical lines joined at trailing backslashes, comments and blanks removed."""
    out: list[str] = []
    pending: list[str] = []
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1].strip())
            continue
        line = " ".join([*pending, raw.strip()]).strip()
        pending = []
        if line.startswith("#"):
            continue
        line = _INLINE_COMMENT.sub("", line).strip()
        if line:
            out.append(line)
    if pending:
        out.append(" ".join(pending).strip())
    return out


def _filter_line(line: str, base_dir: Path | None) -> str | tuple[str, str]:
    if line.replace(" ", "").lower() in _PHANTOMS:
        return (line, WHY_PHANTOM)
    option, _, value = line.partition(" ")
    if option in _PATH_OPTIONS:
        return _local(line, option, value.strip(), base_dir)
    if option in _EDITABLE_OPTIONS:
        target = value.strip()
        if target.startswith(_VCS_PREFIXES):
            return line
        return _local(line, option, target, base_dir)
    if line.startswith("-"):
        return line  # an installer option (--extra-index-url, -f, --pre, ...)
    direct = _DIRECT_URL.match(line)
    if direct:
        return _direct_reference(line, direct.group("name"), direct.group("target"), base_dir)
    if "file:" in line or _looks_like_path(line):
        return _local(line, "", line, base_dir)
    return line


def _direct_reference(
    line: str, name: str, target: str, base_dir: Path | None
) -> str | tuple[str, str]:
    if target.startswith("file:"):
        if base_dir is None:
            return (line, WHY_LOCAL_FILE)
        local = _local(line, "", target, base_dir)
        return local if isinstance(local, tuple) else f"{name.strip()} @ {local}"
    return line


def _local(line: str, option: str, target: str, base_dir: Path | None) -> str | tuple[str, str]:
    """A local path: absolute under ``base_dir`` if it stays inside, else skipped."""
    if base_dir is None:
        return (line, WHY_LOCAL_FILE if "file:" in target else WHY_LOCAL_PATH)
    path = re.sub(r"^file:(//)?", "", target)
    if path.startswith("~"):
        return (line, WHY_OUTSIDE)
    if path.startswith("/"):
        inside = path == str(base_dir) or path.startswith(f"{base_dir}/")
        return _join(option, path) if inside else (line, WHY_OUTSIDE)
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        return (line, WHY_OUTSIDE)
    absolute = str(base_dir) if normal == "." else f"{base_dir}/{normal}"
    return _join(option, absolute)


def _join(option: str, path: str) -> str:
    return f"{option} {path}" if option else path


def _looks_like_path(line: str) -> bool:
    return line.startswith(("/", "./", "../", "~")) or line in {".", ".."}


def _is_editable(line: str) -> bool:
    return line.startswith(_EDITABLE_OPTIONS)


def platform_tag() -> str:
    """The platform a resolution is valid for: OS, CPU and C library."""
    libc, libc_version = platform.libc_ver()
    return f"{platform.system()}-{platform.machine()}-{libc}{libc_version}".lower()


def resolution_key(
    python_version: str,
    requirements: str,
    platform: str,
    installer: str = "uv",
    index_env: Mapping[str, str] | None = None,
) -> str:
    """Hash of everything a resolution depends on; names the cached pinned list."""
    index = {k: v for k, v in sorted((index_env or {}).items()) if k in INDEX_ENV_VARS}
    document = json.dumps(
        {
            "python": python_version,
            "requirements": requirements,
            "platform": platform,
            "installer": installer,
            "index": index,
        },
        sort_keys=True,
    )
    return hashlib.sha256(document.encode()).hexdigest()


def count_frozen(frozen: str) -> int:
    """Packages in ``pip freeze`` output."""
    return sum(1 for line in frozen.splitlines() if line.strip() and not line.startswith("#"))
