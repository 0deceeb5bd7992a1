"""Verifying a cached model (pure checks, and hashing): each file's size, times and sha256 against
the manifest recorded when it was cached; small entries are re-hashed in full on every hit.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.pipeline.models.records import CHUNK_BYTES, Cancelled

log = structlog.get_logger()

# A cache hit on an entry smaller than this is re-hashed in full; a larger one only when a file's
# size, mtime or ctime changed since it was cached (see "Verifying cache hits" above).
FULL_VERIFY_BELOW = 256_000_000


@dataclass(frozen=True)
class FileRecord:
    """One file of a cache entry as recorded when it was cached (or as observed now: then
    ``sha256`` is empty). A symbolic link is recorded by its target."""

    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str = ""

    def stamp(self) -> tuple[int, int, int]:
        return self.size, self.mtime_ns, self.ctime_ns


@dataclass(frozen=True)
class EntryCheck:
    """What a cache hit needs before use: ``problem`` says why the entry is unusable (it is
    evicted and fetched again); otherwise the files in ``rehash`` must match their digests."""

    problem: str = ""
    rehash: tuple[str, ...] = ()


def check_entry(
    recorded: Mapping[str, FileRecord],
    observed: Mapping[str, FileRecord],
    full_verify_below: int = FULL_VERIFY_BELOW,
) -> EntryCheck:
    """Pure: compare an entry's files with its manifest. Missing, added or resized files are a
    problem at once; below ``full_verify_below`` bytes every file is re-hashed, above it only
    those whose mtime or ctime changed."""
    if missing := sorted(recorded.keys() - observed.keys()):
        return EntryCheck(f"{missing[0]} is missing")
    if added := sorted(observed.keys() - recorded.keys()):
        return EntryCheck(f"{added[0]} was added")
    for name in sorted(recorded):
        if observed[name].size != recorded[name].size:
            return EntryCheck(
                f"{name} has {observed[name].size} bytes, {recorded[name].size} recorded"
            )
    if sum(record.size for record in recorded.values()) < full_verify_below:
        return EntryCheck(rehash=tuple(sorted(recorded)))
    return EntryCheck(
        rehash=tuple(
            name for name in sorted(recorded) if observed[name].stamp() != recorded[name].stamp()
        )
    )


def observe(content: Path) -> dict[str, FileRecord]:
    """Every file (and symbolic link) under ``content`` with its size and times (no digest)."""
    found: dict[str, FileRecord] = {}
    for top, dirs, files in os.walk(content):
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        for name in (*files, *links):
            path = Path(top, name)
            st = path.lstat()
            rel = path.relative_to(content).as_posix()
            found[rel] = FileRecord(st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return found


def hash_path(path: Path, cancel: threading.Event) -> str:
    """A file's sha256 (a symbolic link's: of its target), read in chunks, cancellable."""
    digest = hashlib.sha256()
    if path.is_symlink():
        digest.update(os.readlink(path).encode())
        return digest.hexdigest()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            if cancel.is_set():
                raise Cancelled
            digest.update(chunk)
    return digest.hexdigest()


def manifest(
    content: Path, known: Mapping[str, str], cancel: threading.Event
) -> dict[str, FileRecord]:
    """The files of a staged entry with their digests (``known`` ones are not hashed again)."""
    return {
        name: FileRecord(*seen.stamp(), known.get(name) or hash_path(content / name, cancel))
        for name, seen in observe(content).items()
    }


def manifest_doc(files: Mapping[str, FileRecord]) -> dict[str, list[int | str]]:
    return {
        name: [record.size, record.mtime_ns, record.ctime_ns, record.sha256]
        for name, record in files.items()
    }


def manifest_of(meta: Mapping[str, Any]) -> dict[str, FileRecord]:
    """The manifest recorded in an entry's metadata; KeyError/TypeError/ValueError if none."""
    files = meta["files"]
    if not isinstance(files, dict):
        raise TypeError("files")
    return {
        str(name): FileRecord(int(size), int(mtime), int(ctime), str(sha))
        for name, (size, mtime, ctime, sha) in files.items()
    }
