"""The model cache on disk: content-addressed entries shared by every agent on the machine, leases
for running tasks, bounded by size with least-recently-used eviction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock
import psutil
import structlog

from agent.pipeline.models.entries import (
    META,
    CacheEntry,
    CacheState,
    entry_key,
    exposed_path,
    make_read_only,
    read_meta,
    write_atomic,
)
from agent.pipeline.models.fetch import fetch_to, local_stamp
from agent.pipeline.models.records import (
    SHORT_SHA,
    UNSAFE_FILE_CHARS,
    Cancelled,
    FetchedModel,
    ModelError,
    ModelSource,
    redact,
)
from agent.pipeline.models.unpack import CONTENT, DOWNLOAD, stage_content
from agent.pipeline.models.verify import (
    FULL_VERIFY_BELOW,
    FileRecord,
    check_entry,
    hash_path,
    manifest,
    manifest_doc,
    manifest_of,
    observe,
)

log = structlog.get_logger()

LOCK_TIMEOUT = 120.0  # the cache's bookkeeping lock: held for milliseconds…
LOCK_RETRY = 0.005  # …so a waiter retries often (filelock's default is 50 ms)
LOCK_POLL = 0.5  # a URI lock (held for a whole download) is polled so a cancel gets through
_USED = "used"


class ModelCache:
    """A size-bounded, content-addressed store of model files shared by the machine's agents."""

    def __init__(
        self, root: Path, max_bytes: int, *, full_verify_below: int = FULL_VERIFY_BELOW
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes  # 0 or less: unbounded
        self.full_verify_below = full_verify_below
        for sub in ("entries", "uris", "tmp", "locks", "leases"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._remove_orphans()

    # public ------------------------------------------------------------------------------
    def fetch(
        self,
        source: ModelSource,
        *,
        owner: str,
        cancel: threading.Event | None = None,
        headers: Mapping[str, str] | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> FetchedModel:
        """Blocking: the model's local path, from the cache (verified first) or downloaded (and
        verified) into it; leased to ``owner`` until :meth:`release`. ``notice`` hears about a
        cached copy that failed verification. :class:`ModelError` says what failed."""
        cancel = cancel or threading.Event()
        stamp = local_stamp(source.uri)
        hit = self._hit(source, stamp, owner, cancel, notice)
        if hit:
            return hit
        with self._uri_lock(source.uri, cancel):
            hit = self._hit(source, stamp, owner, cancel, notice)  # fetched by another agent?
            if hit:
                return hit
            return self._download(source, stamp, owner, cancel, headers or {})

    def release(self, owner: str) -> None:
        """The task ``owner`` no longer uses its models: they may be evicted, and are at once if
        its lease held the cache over its bound."""
        with self._lock():
            self._lease_path(owner).unlink(missing_ok=True)
            self._evict(protect=set())

    def usage(self) -> tuple[int, list[str]]:
        """Bytes held and entry keys, least recently used first."""
        with self._lock():
            entries = self._entries()
        return sum(size for _, _, size in entries), [key for key, _, _ in entries]

    def state(self) -> CacheState:
        """The entries, their sizes and whether a live task leases them (one consistent view)."""
        with self._lock():
            leased = self._leased()
            entries = tuple(
                CacheEntry(key, size, key in leased) for key, _, size in self._entries()
            )
        return CacheState(self.max_bytes, entries)

    # lookup, verification and download ---------------------------------------------------
    def _hit(
        self,
        source: ModelSource,
        stamp: str,
        owner: str,
        cancel: threading.Event,
        notice: Callable[[str], None] | None,
    ) -> FetchedModel | None:
        """The cached copy, leased to ``owner`` once verified; None when there is none (or it
        failed verification: then it is evicted)."""
        with self._lock():
            sha = source.sha256 or self._indexed(source.uri, stamp)
            if not sha:
                return None
            key = entry_key(sha, source.package)
            meta = self._use(key, owner)
        if meta is None:
            return None
        entry = self.root / "entries" / key
        problem, rehashed = self._verify(entry, meta, cancel)  # outside the lock: may take long
        if problem:
            self._discard(key, meta, owner)
            log.warning("model cache entry failed verification", key=key, problem=problem)
            if notice:
                notice(
                    f"model {source.name}: the cached copy failed verification ({problem}); "
                    "evicted, fetching it again"
                )
            return None
        return FetchedModel(
            source.name,
            source.model_id,
            exposed_path(entry, meta),
            sha,
            True,
            int(meta.get("size", 0)),
            source.sha256 is not None,
            rehashed,
        )

    def _verify(
        self, entry: Path, meta: Mapping[str, Any], cancel: threading.Event
    ) -> tuple[str, bool]:
        """Why a cached entry cannot be used ("" when it can), and whether it was re-hashed."""
        try:
            recorded = manifest_of(meta)
        except (KeyError, TypeError, ValueError):
            return "it has no valid manifest (cached by an older agent?)", False
        content = entry / CONTENT
        try:
            observed = observe(content)
        except OSError as exc:
            return f"cannot list it: {exc.strerror or exc}", False
        check = check_entry(recorded, observed, self.full_verify_below)
        if check.problem:
            return check.problem, False
        for name in check.rehash:
            try:
                digest = hash_path(content / name, cancel)
            except OSError as exc:
                return f"{name}: {exc.strerror or exc}", False
            if digest != recorded[name].sha256:
                expected = recorded[name].sha256
                return (
                    f"{name} has sha256 {digest[:SHORT_SHA]}…, {expected[:SHORT_SHA]}… recorded"
                ), False
        if any(observed[name].stamp() != record.stamp() for name, record in recorded.items()):
            self._restamp(entry, meta, observed)  # touched, not changed: cheap next time
        return "", bool(check.rehash)

    def _discard(self, key: str, meta: Mapping[str, Any], owner: str) -> None:
        """Evict an entry that failed verification, unless another agent replaced it since."""
        with self._lock():
            self._unlease(owner, key)
            if read_meta(self.root / "entries" / key).get("generation") == meta.get("generation"):
                with contextlib.suppress(FileNotFoundError):  # another agent evicted it first
                    self._remove_entry(key)

    def _restamp(
        self, entry: Path, meta: Mapping[str, Any], observed: Mapping[str, FileRecord]
    ) -> None:
        recorded = manifest_of(meta)
        files = {
            name: FileRecord(*observed[name].stamp(), record.sha256)
            for name, record in recorded.items()
        }
        with self._lock():
            if read_meta(entry).get("generation") == meta.get("generation"):
                write_atomic(entry / META, json.dumps({**meta, "files": manifest_doc(files)}))

    def _download(
        self,
        source: ModelSource,
        stamp: str,
        owner: str,
        cancel: threading.Event,
        headers: Mapping[str, str],
    ) -> FetchedModel:
        stage = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
        (stage / CONTENT).mkdir(parents=True)
        try:
            sha = fetch_to(source.uri, stage / DOWNLOAD, cancel, headers)
            if source.sha256 and sha != source.sha256:
                raise ModelError(
                    f"checksum mismatch: the model records sha256 {source.sha256[:SHORT_SHA]}…, "
                    f"{redact(source.uri)} has {sha[:SHORT_SHA]}…"
                )
            name = stage_content(stage, source)
            make_read_only(stage / CONTENT)
            files = manifest(stage / CONTENT, {name: sha} if name else {}, cancel)
            size = sum(record.size for record in files.values())
            meta = {
                "sha256": sha,
                "name": name,
                "size": size,
                "package": source.package,
                "generation": uuid.uuid4().hex,
                "files": manifest_doc(files),
            }
            (stage / META).write_text(json.dumps(meta))
            path = self._commit(
                stage, entry_key(sha, source.package), source.uri, stamp, sha, owner
            )
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return FetchedModel(
            source.name, source.model_id, path, sha, False, size, source.sha256 is not None
        )

    def _commit(self, stage: Path, key: str, uri: str, stamp: str, sha: str, owner: str) -> Path:
        with self._lock():
            entry = self.root / "entries" / key
            if not read_meta(entry):  # none yet, or one whose metadata is unreadable: replace
                if entry.exists():
                    self._remove_entry(key)
                stage.rename(entry)
            record = {"uri": redact(uri), "sha256": sha, "stamp": stamp}
            write_atomic(self._uri_record(uri), json.dumps(record))
            meta = self._use(key, owner)
            if meta is None:  # cannot happen: committed under this very lock
                raise ModelError(f"the cache lost entry {key} while committing it")
            self._evict(protect={key})
        return exposed_path(entry, meta)

    # bookkeeping (callers hold the lock) -----------------------------------------------------
    def _use(self, key: str, owner: str) -> dict[str, Any] | None:
        """Touch and lease an entry; its metadata, or None when absent."""
        entry = self.root / "entries" / key
        meta = read_meta(entry)
        if not meta:
            return None
        now = time.time_ns()
        (entry / _USED).touch()
        os.utime(entry / _USED, ns=(now, now))
        self._lease(owner, key)
        return meta

    def _lease_path(self, owner: str) -> Path:
        return self.root / "leases" / f"{UNSAFE_FILE_CHARS.sub('_', owner)}.json"

    def _lease(self, owner: str, key: str) -> None:
        path = self._lease_path(owner)
        keys: list[str] = []
        with contextlib.suppress(FileNotFoundError, ValueError):
            keys = list(json.loads(path.read_text()).get("keys", []))
        if key not in keys:
            keys.append(key)
        lease = {"pid": os.getpid(), "host": socket.gethostname(), "keys": keys}
        write_atomic(path, json.dumps(lease))

    def _unlease(self, owner: str, key: str) -> None:
        path = self._lease_path(owner)
        try:
            lease = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return
        keys = [k for k in lease.get("keys", []) if k != key]
        write_atomic(path, json.dumps({**lease, "keys": keys}))

    def _leased(self) -> set[str]:
        """Keys leased by live owners; leases of dead agent processes are removed."""
        keys: set[str] = set()
        for path in (self.root / "leases").glob("*.json"):
            try:
                lease = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                continue
            if lease.get("host") == socket.gethostname() and not psutil.pid_exists(
                int(lease.get("pid", 0))
            ):
                path.unlink(missing_ok=True)
                continue
            keys.update(str(k) for k in lease.get("keys", []))
        return keys

    def _entries(self) -> list[tuple[str, int, int]]:
        """(key, last use in ns, size) of complete entries, least recently used first."""
        out: list[tuple[str, int, int]] = []
        for entry in (self.root / "entries").iterdir():
            try:
                size = int(json.loads((entry / META).read_text()).get("size", 0))
                used = (entry / _USED).stat().st_mtime_ns
            except (FileNotFoundError, ValueError):
                continue
            out.append((entry.name, used, size))
        return sorted(out, key=lambda e: e[1])

    def _evict(self, protect: set[str]) -> None:
        if self.max_bytes <= 0:
            return
        entries = self._entries()
        total = sum(size for _, _, size in entries)
        keep = protect | self._leased()
        for key, _, size in entries:
            if total <= self.max_bytes:
                break
            if key in keep:
                continue
            self._remove_entry(key)
            total -= size
            log.info("model cache eviction", key=key, size=size)
        if total > self.max_bytes:
            log.warning("model cache over its bound", bytes=total, max_bytes=self.max_bytes)

    def _remove_entry(self, key: str) -> None:
        # Rename first: an entry is there (complete) or not; a crash leaves only tmp debris.
        doomed = self.root / "tmp" / f"{os.getpid()}-evict-{uuid.uuid4().hex}"
        (self.root / "entries" / key).rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def _remove_orphans(self) -> None:
        """Staging dirs of agent processes that died mid-download."""
        for stage in (self.root / "tmp").iterdir():
            pid = stage.name.partition("-")[0]
            if not pid.isdigit() or not psutil.pid_exists(int(pid)):
                shutil.rmtree(stage, ignore_errors=True)

    def _indexed(self, uri: str, stamp: str) -> str | None:
        try:
            record = json.loads(self._uri_record(uri).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return str(record["sha256"]) if record.get("stamp") == stamp else None

    def _uri_record(self, uri: str) -> Path:
        return self.root / "uris" / f"{hashlib.sha256(uri.encode()).hexdigest()}.json"

    # locks ------------------------------------------------------------------------------
    def _lock(self) -> filelock.FileLock:
        return filelock.FileLock(
            str(self.root / ".lock"), timeout=LOCK_TIMEOUT, poll_interval=LOCK_RETRY
        )

    @contextlib.contextmanager
    def _uri_lock(self, uri: str, cancel: threading.Event) -> Iterator[None]:
        digest = hashlib.sha256(uri.encode()).hexdigest()[:40]
        lock = filelock.FileLock(str(self.root / "locks" / f"{digest}.lock"))
        while True:
            if cancel.is_set():
                raise Cancelled
            try:
                lock.acquire(timeout=LOCK_POLL)
                break
            except filelock.Timeout:
                continue
        try:
            yield
        finally:
            lock.release()
