"""The model cache's entries: keys, their meta.json, the path a task sees, read-only content, and
the cache's state as the eviction sees it (least recently used first, leased ones protected).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.pipeline.models.unpack import CONTENT

PACKAGE_SUFFIX = ".x"
META = "meta.json"


@dataclass(frozen=True)
class CacheEntry:
    key: str  # sha256, with ".x" for an extracted package
    size: int
    leased: bool  # used by a running task: never evicted


@dataclass(frozen=True)
class CacheState:
    max_bytes: int  # 0 or less: unbounded
    entries: tuple[CacheEntry, ...]  # least recently used first

    @property
    def total(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def within_bound(self) -> bool:
        """The cache's invariant: within its bound, or over it only because every entry left is
        leased (eviction never takes a model from a running task)."""
        return (
            self.max_bytes <= 0
            or self.total <= self.max_bytes
            or all(entry.leased for entry in self.entries)
        )


def entry_key(sha: str, package: bool) -> str:
    return sha + PACKAGE_SUFFIX if package else sha


def read_meta(entry: Path) -> dict[str, Any]:
    """An entry's metadata; empty when the entry is absent (or its metadata unreadable)."""
    try:
        meta = json.loads((entry / META).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def exposed_path(entry: Path, meta: Mapping[str, Any]) -> Path:
    """What the task gets: the file, or the extracted folder of a package."""
    content = entry / CONTENT
    return content if meta.get("package") else content / str(meta["name"])


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text)
    tmp.replace(path)


def make_read_only(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o444)
