"""The file service's disk: objects under one root, written atomically, with a size quota.

An upload is written to a temporary file in ``<root>/.conveyor-staging`` (same filesystem),
fsynced, then renamed over its target: a reader sees the old object or the new one, never a
part. Paths are object keys (``files_paths.object_key``); no component on the way to an object
may be a symlink, so nothing is read or written outside the root. All methods block: the HTTP
side calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent.server.files_paths import (
    STAGING_DIR,
    FilesError,
    ObjectKey,
    conflict,
    not_found,
    refused,
    too_large,
)

log = structlog.get_logger()

STALE_STAGING_SECONDS = 600.0  # a live upload rewrites its staging file far more often than this
DISK_FULL = 507
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Stored:
    key: ObjectKey
    size: int

    @property
    def path(self) -> str:
        return "/".join(self.key)


class Staged:
    """One upload in progress: a temporary file whose bytes are reserved against the quota."""

    def __init__(self, store: FileStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.staging, suffix=".part")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self.size = 0
        self._open = True
        self.committed = False

    def write(self, data: bytes | memoryview) -> None:
        self._store.reserve(len(data), self.size)
        self.size += len(data)
        try:
            self._file.write(data)
        except OSError as exc:
            _raise_if_disk_full(exc)
            raise

    def seal(self) -> None:
        """Flush to disk and close (before the rename makes it visible)."""
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            _raise_if_disk_full(exc)
            raise
        self._file.close()
        self._open = False

    def abort(self) -> None:
        """Drop an upload that was not committed (and its reservation)."""
        if self._open:
            self._file.close()
            self._open = False
        if self.committed:
            return
        self.path.unlink(missing_ok=True)
        self._store.release(self.size)
        self.size = 0


def _raise_if_disk_full(exc: OSError) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise FilesError(DISK_FULL, f"the server's disk is full: {exc.strerror}") from exc


class FileStore:
    """Objects under ``root``; ``quota`` bounds the bytes stored (None: only the disk does)."""

    def __init__(self, root: Path, quota: int | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.staging = self.root / STAGING_DIR
        self.staging.mkdir(exist_ok=True)
        self.quota = quota
        self._lock = threading.Lock()
        self._used: int | None = None  # bytes stored + reserved; counted on first need
        self._remove_stale_staging()

    # --- quota ---------------------------------------------------------------------------
    def used(self) -> int:
        with self._lock:
            return self._usage()

    def _usage(self) -> int:
        if self._used is None:
            self._used = _tree_size(self.root, skip=self.staging)
        return self._used

    def reserve(self, n: int, upload_so_far: int = 0) -> None:
        """Count ``n`` more bytes of an upload that has ``upload_so_far`` reserved already."""
        if self.quota is None:
            return
        with self._lock:
            used = self._usage()
            if used + n > self.quota:
                raise too_large(
                    f"upload exceeds the files quota of {_mib(self.quota)}: "
                    f"{_mib(used - upload_so_far)} already used, "
                    f"the upload passed it at {_mib(upload_so_far + n)}"
                )
            self._used = used + n

    def release(self, n: int) -> None:
        if self.quota is None or n == 0:
            return
        with self._lock:
            self._used = self._usage() - n

    # --- paths ---------------------------------------------------------------------------
    def _walk(self, key: ObjectKey, *, create: bool) -> Path:
        """The path of ``key``'s parent folder, checked component by component: each existing
        one must be a real directory (no symlink), missing ones are created if ``create``."""
        current = self.root
        for part in key[:-1]:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                if not create:
                    raise not_found(f"no such file: {'/'.join(key)}") from None
                _mkdir(current, key)
                continue
            if stat.S_ISLNK(mode):
                raise refused(f"refusing a path through a symlink: {'/'.join(key)}")
            if not stat.S_ISDIR(mode):
                if create:
                    raise conflict(f"{current.relative_to(self.root)} is a file, not a folder")
                raise not_found(f"no such file: {'/'.join(key)}")
        return current

    def open_read(self, key: ObjectKey) -> tuple[int, os.stat_result]:
        """An open descriptor of the object and its stat (the caller closes it). The open file
        stays consistent even if a new upload replaces the object meanwhile."""
        path = self._walk(key, create=False) / key[-1]
        try:
            fd = os.open(path, _OPEN_READ)
        except FileNotFoundError:
            raise not_found(f"no such file: {'/'.join(key)}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise refused(f"refusing a symlink: {'/'.join(key)}") from exc
            if exc.errno == errno.EISDIR:
                raise not_found(f"{'/'.join(key)} is a folder, not a file") from exc
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise not_found(f"{'/'.join(key)} is not a regular file")
        return fd, info

    # --- writes --------------------------------------------------------------------------
    def stage(self) -> Staged:
        return Staged(self)

    def commit(self, staged: Staged, key: ObjectKey) -> Stored:
        """Seal an upload and move it into place, replacing any older object at ``key``."""
        target = self._walk(key, create=True) / key[-1]
        staged.seal()
        with self._lock:
            try:
                old = os.lstat(target)
            except FileNotFoundError:
                old = None
            if old is not None and stat.S_ISLNK(old.st_mode):
                raise refused(f"refusing to replace a symlink: {'/'.join(key)}")
            if old is not None and stat.S_ISDIR(old.st_mode):
                raise conflict(f"{'/'.join(key)} is a folder, not a file")
            os.replace(staged.path, target)
            staged.committed = True
            if self.quota is not None and old is not None and self._used is not None:
                self._used -= old.st_size
        return Stored(key, staged.size)

    def delete(self, key: ObjectKey) -> Stored:
        """Remove the object; empty folders it leaves behind go too (never the root)."""
        parent = self._walk(key, create=False)
        target = parent / key[-1]
        with self._lock:
            try:
                info = os.lstat(target)
            except FileNotFoundError:
                raise not_found(f"no such file: {'/'.join(key)}") from None
            if not stat.S_ISREG(info.st_mode):
                raise conflict(f"{'/'.join(key)} is not a file (folders are not deleted)")
            target.unlink()
            if self.quota is not None and self._used is not None:
                self._used -= info.st_size
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty (or just filled by another upload): keep it
                break
            parent = parent.parent
        return Stored(key, info.st_size)

    def _remove_stale_staging(self) -> None:
        cutoff = time.time() - STALE_STAGING_SECONDS
        for entry in os.scandir(self.staging):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    log.info("files_stale_upload_removed", path=entry.path)


def _mkdir(path: Path, key: ObjectKey) -> None:
    try:
        path.mkdir()
    except FileExistsError:
        # Created meanwhile by a concurrent upload: fine if it is a real folder.
        if stat.S_ISLNK(os.lstat(path).st_mode) or not path.is_dir():
            raise conflict(f"{'/'.join(key)}: a component is not a folder") from None


def _tree_size(root: Path, *, skip: Path) -> int:
    total = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.path != str(skip):
                        stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total
