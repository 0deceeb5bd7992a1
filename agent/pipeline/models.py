"""Input models: resolved on the server, fetched into a content-addressed cache, verified,
exposed to the task by path, while the environment is being built.

For each entry of the task's ``models.input`` the model document gives a URI (``file://``,
``http(s)://``; ``s3://`` with the ``boto3`` extra, ``gs://`` with ``google-cloud-storage``).
The weights land in ``<cache>/entries/<sha256>/content/<file name>``; a model the SDK tagged as a
package (system tag ``package``: a zipped folder) is extracted once, into
``<cache>/entries/<sha256>.x/content/``. The task sees the path as
``CONVEYOR_INPUT_MODEL_<NAME>`` (and the first model also as ``CONVEYOR_INPUT_MODEL``).

Checksums: the convention is the model metadata key ``sha256`` (the key the SDK itself puts on
objects it uploads to S3/GCS/Azure). When the model records one, the download must match it, and a
cached copy with that digest is a hit whatever the URI; when it records none, the digest is
computed while downloading and recorded on the model (``models.add_or_update_metadata``), so the
next run verifies against it.

The cache is shared by every agent on the machine: one ``filelock`` guards its bookkeeping, one
per URI makes concurrent agents download a model once. It is bounded by size; the least recently
used entries go first, except those leased by a running task (``leases/<task id>.json``, released
with :meth:`ModelCache.release`). Leased models can hold the cache over its bound, never other
ones: each commit and each release evicts (:attr:`CacheState.within_bound` is the invariant).
Entries are made read-only: in docker mode the cache directory is mounted read-only at the same
path.

Verifying cache hits: a cached copy is checked before a task gets it, against the manifest
recorded when it was cached (each file's size, mtime, ctime and sha256). A file missing, added or
resized fails at once. An entry under ``FULL_VERIFY_BELOW`` bytes (256 MB) is re-hashed in full
on every hit: sha256 runs at ~1 GB/s, so that costs a fraction of a second from the page cache,
about a second from disk, and overlaps the environment build. A larger entry is re-hashed only
where a file's mtime or ctime moved: an overwrite, a ``chmod``, even a write whose mtime was put
back with ``os.utime`` moves the ctime, which no system call sets back (short of changing the
clock). The trade-off: a change that leaves the inode untouched (bit rot, a raw write to the
block device) in an entry over the threshold goes unseen; catching it would mean re-hashing tens
of GB at every task start. An intact entry whose times moved is re-stamped after its re-hash, so
the next hit is cheap again. An entry that fails is evicted (unless another agent replaced it
meanwhile), the task's console says so, and the model is fetched again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import re
import shutil
import socket
import ssl
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

import filelock
import httpx
import psutil
import structlog

from agent.api.client import ApiClient
from agent.api.errors import INVALID_MODEL_ID, ApiError
from agent.api.models import InputModelRef, TaskDocumentError, TaskSpec
from agent.errors import StageError
from agent.pipeline.console import Console

log = structlog.get_logger()

SHA256_METADATA_KEY = "sha256"
PACKAGE_TAG = "package"
INPUT_MODEL_ENV = "CONVEYOR_INPUT_MODEL"
INPUT_MODEL_ENV_PREFIX = "CONVEYOR_INPUT_MODEL_"
CHUNK_BYTES = 1 << 20
DOWNLOAD_ATTEMPTS = 3
RETRY_BACKOFF = 1.0  # seconds before the second attempt; doubled after each failure
HTTP_TIMEOUT = httpx.Timeout(30.0, read=300.0)
LOCK_TIMEOUT = 120.0  # the cache's bookkeeping lock: held for milliseconds…
LOCK_RETRY = 0.005  # …so a waiter retries often (filelock's default is 50 ms)
LOCK_POLL = 0.5  # a URI lock (held for a whole download) is polled so a cancel gets through
SHORT_SHA = 12
# A cache hit on an entry smaller than this is re-hashed in full; a larger one only when a file's
# size, mtime or ctime changed since it was cached (see "Verifying cache hits" above).
FULL_VERIFY_BELOW = 256_000_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE_VAR_CHARS = re.compile(r"[^A-Za-z0-9]+")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+|^\.+")
_PACKAGE_SUFFIX = ".x"
_META = "meta.json"
_USED = "used"
_CONTENT = "content"
_DOWNLOAD = "download"
_EXTRAS = {"s3": ("boto3", "s3"), "gs": ("google.cloud.storage", "gcs")}


class ModelError(Exception):
    """A model could not be fetched; the message says why (the caller adds which model)."""


class _Cancelled(Exception):
    """The fetch was cancelled (the task was aborted, or another model failed)."""


@dataclass(frozen=True)
class ModelSource:
    """What the server says about one input model, as the cache needs it."""

    name: str
    model_id: str
    uri: str
    sha256: str | None = None  # recorded digest, if any
    package: bool = False  # a zipped folder: extract it


@dataclass(frozen=True)
class FetchedModel:
    name: str
    model_id: str
    path: Path  # the file, or the extracted folder of a package
    sha256: str
    cache_hit: bool
    size: int = 0  # bytes in the cache (extracted size for a package)
    recorded: bool = False  # the model recorded the digest before this fetch
    rehashed: bool = False  # a cache hit whose content was hashed again before use


# --- pure helpers ----------------------------------------------------------------------------


def expected_sha256(metadata: Mapping[str, str]) -> str | None:
    """The digest recorded in the model's metadata (``sha256``, optionally ``sha256:``-prefixed),
    or None; :class:`ModelError` if it is there but is not a sha256 hex digest."""
    raw = metadata.get(SHA256_METADATA_KEY, "").strip().lower()
    if not raw:
        return None
    digest = raw.removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise ModelError(f"metadata {SHA256_METADATA_KEY}={raw!r:.80} is not a sha256 hex digest")
    return digest


def model_env_names(refs: Sequence[InputModelRef]) -> list[str]:
    """``CONVEYOR_INPUT_MODEL_<NAME>`` per model (name sanitised, collisions numbered)."""
    names: list[str] = []
    for ref in refs:
        base = INPUT_MODEL_ENV_PREFIX + (
            _UNSAFE_VAR_CHARS.sub("_", ref.name).strip("_").upper() or "MODEL"
        )
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def input_model_env(fetched: Sequence[FetchedModel], names: Sequence[str]) -> dict[str, str]:
    env = {name: str(model.path) for name, model in zip(names, fetched, strict=True)}
    if fetched:
        env[INPUT_MODEL_ENV] = str(fetched[0].path)
    return env


def redact(uri: str) -> str:
    """The URI without credentials or query string (signed URLs), for logs and messages."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def file_name_of(uri: str) -> str:
    name = PurePosixPath(unquote(urlsplit(uri).path)).name
    return name if name not in ("", ".", "..") else "model"


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


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


# --- the cache -------------------------------------------------------------------------------


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
        stamp = _local_stamp(source.uri)
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
            key = _key(sha, source.package)
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
            _exposed(entry, meta),
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
            recorded = _manifest_of(meta)
        except (KeyError, TypeError, ValueError):
            return "it has no valid manifest (cached by an older agent?)", False
        content = entry / _CONTENT
        try:
            observed = _observe(content)
        except OSError as exc:
            return f"cannot list it: {exc.strerror or exc}", False
        check = check_entry(recorded, observed, self.full_verify_below)
        if check.problem:
            return check.problem, False
        for name in check.rehash:
            try:
                digest = _hash_path(content / name, cancel)
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
            if _read_meta(self.root / "entries" / key).get("generation") == meta.get("generation"):
                with contextlib.suppress(FileNotFoundError):  # another agent evicted it first
                    self._remove_entry(key)

    def _restamp(
        self, entry: Path, meta: Mapping[str, Any], observed: Mapping[str, FileRecord]
    ) -> None:
        recorded = _manifest_of(meta)
        files = {
            name: FileRecord(*observed[name].stamp(), record.sha256)
            for name, record in recorded.items()
        }
        with self._lock():
            if _read_meta(entry).get("generation") == meta.get("generation"):
                _write_atomic(entry / _META, json.dumps({**meta, "files": _manifest_doc(files)}))

    def _download(
        self,
        source: ModelSource,
        stamp: str,
        owner: str,
        cancel: threading.Event,
        headers: Mapping[str, str],
    ) -> FetchedModel:
        stage = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
        (stage / _CONTENT).mkdir(parents=True)
        try:
            sha = _fetch_to(source.uri, stage / _DOWNLOAD, cancel, headers)
            if source.sha256 and sha != source.sha256:
                raise ModelError(
                    f"checksum mismatch: the model records sha256 {source.sha256[:SHORT_SHA]}…, "
                    f"{redact(source.uri)} has {sha[:SHORT_SHA]}…"
                )
            name = _stage_content(stage, source)
            _make_read_only(stage / _CONTENT)
            files = _manifest(stage / _CONTENT, {name: sha} if name else {}, cancel)
            size = sum(record.size for record in files.values())
            meta = {
                "sha256": sha,
                "name": name,
                "size": size,
                "package": source.package,
                "generation": uuid.uuid4().hex,
                "files": _manifest_doc(files),
            }
            (stage / _META).write_text(json.dumps(meta))
            path = self._commit(stage, _key(sha, source.package), source.uri, stamp, sha, owner)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return FetchedModel(
            source.name, source.model_id, path, sha, False, size, source.sha256 is not None
        )

    def _commit(self, stage: Path, key: str, uri: str, stamp: str, sha: str, owner: str) -> Path:
        with self._lock():
            entry = self.root / "entries" / key
            if not _read_meta(entry):  # none yet, or one whose metadata is unreadable: replace
                if entry.exists():
                    self._remove_entry(key)
                stage.rename(entry)
            record = {"uri": redact(uri), "sha256": sha, "stamp": stamp}
            _write_atomic(self._uri_record(uri), json.dumps(record))
            meta = self._use(key, owner)
            if meta is None:  # cannot happen: committed under this very lock
                raise ModelError(f"the cache lost entry {key} while committing it")
            self._evict(protect={key})
        return _exposed(entry, meta)

    # bookkeeping (callers hold the lock) -----------------------------------------------------
    def _use(self, key: str, owner: str) -> dict[str, Any] | None:
        """Touch and lease an entry; its metadata, or None when absent."""
        entry = self.root / "entries" / key
        meta = _read_meta(entry)
        if not meta:
            return None
        now = time.time_ns()
        (entry / _USED).touch()
        os.utime(entry / _USED, ns=(now, now))
        self._lease(owner, key)
        return meta

    def _lease_path(self, owner: str) -> Path:
        return self.root / "leases" / f"{_UNSAFE_FILE_CHARS.sub('_', owner)}.json"

    def _lease(self, owner: str, key: str) -> None:
        path = self._lease_path(owner)
        keys: list[str] = []
        with contextlib.suppress(FileNotFoundError, ValueError):
            keys = list(json.loads(path.read_text()).get("keys", []))
        if key not in keys:
            keys.append(key)
        lease = {"pid": os.getpid(), "host": socket.gethostname(), "keys": keys}
        _write_atomic(path, json.dumps(lease))

    def _unlease(self, owner: str, key: str) -> None:
        path = self._lease_path(owner)
        try:
            lease = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return
        keys = [k for k in lease.get("keys", []) if k != key]
        _write_atomic(path, json.dumps({**lease, "keys": keys}))

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
                size = int(json.loads((entry / _META).read_text()).get("size", 0))
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
                raise _Cancelled
            try:
                lock.acquire(timeout=LOCK_POLL)
                break
            except filelock.Timeout:
                continue
        try:
            yield
        finally:
            lock.release()


def _key(sha: str, package: bool) -> str:
    return sha + _PACKAGE_SUFFIX if package else sha


def _read_meta(entry: Path) -> dict[str, Any]:
    """An entry's metadata; empty when the entry is absent (or its metadata unreadable)."""
    try:
        meta = json.loads((entry / _META).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _exposed(entry: Path, meta: Mapping[str, Any]) -> Path:
    """What the task gets: the file, or the extracted folder of a package."""
    content = entry / _CONTENT
    return content if meta.get("package") else content / str(meta["name"])


def _observe(content: Path) -> dict[str, FileRecord]:
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


def _hash_path(path: Path, cancel: threading.Event) -> str:
    """A file's sha256 (a symbolic link's: of its target), read in chunks, cancellable."""
    digest = hashlib.sha256()
    if path.is_symlink():
        digest.update(os.readlink(path).encode())
        return digest.hexdigest()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            if cancel.is_set():
                raise _Cancelled
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(
    content: Path, known: Mapping[str, str], cancel: threading.Event
) -> dict[str, FileRecord]:
    """The files of a staged entry with their digests (``known`` ones are not hashed again)."""
    return {
        name: FileRecord(*seen.stamp(), known.get(name) or _hash_path(content / name, cancel))
        for name, seen in _observe(content).items()
    }


def _manifest_doc(files: Mapping[str, FileRecord]) -> dict[str, list[int | str]]:
    return {
        name: [record.size, record.mtime_ns, record.ctime_ns, record.sha256]
        for name, record in files.items()
    }


def _manifest_of(meta: Mapping[str, Any]) -> dict[str, FileRecord]:
    """The manifest recorded in an entry's metadata; KeyError/TypeError/ValueError if none."""
    files = meta["files"]
    if not isinstance(files, dict):
        raise TypeError("files")
    return {
        str(name): FileRecord(int(size), int(mtime), int(ctime), str(sha))
        for name, (size, mtime, ctime, sha) in files.items()
    }


def _local_stamp(uri: str) -> str:
    """For a local file, size and modification time: a changed file is not a cache hit."""
    path = _local_path(uri)
    if path is None:
        return ""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text)
    tmp.replace(path)


def _make_read_only(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o444)


# --- staging: the downloaded file, or the extracted package ------------------------------------


def _stage_content(stage: Path, source: ModelSource) -> str:
    """Move the download into ``stage/content`` (extracting a package); the file's name."""
    download = stage / _DOWNLOAD
    if not source.package:
        name = file_name_of(source.uri)
        download.rename(stage / _CONTENT / name)
        return name
    if zipfile.is_zipfile(download):
        _extract_zip(download, stage / _CONTENT)
    elif tarfile.is_tarfile(download):
        _extract_tar(download, stage / _CONTENT)
    else:
        raise ModelError("the model is tagged as a package but is not a zip or tar archive")
    download.unlink()
    return ""


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            parts = PurePosixPath(member.replace("\\", "/")).parts
            if member.startswith(("/", "\\")) or ".." in parts or ":" in member:
                raise ModelError(f"unsafe path in the package: {member!r:.120}")
        zf.extractall(dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise ModelError("extracting a tar package safely needs Python >= 3.11.4")
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise ModelError(f"unsafe member in the package: {exc}") from exc
    except tarfile.TarError as exc:
        raise ModelError(f"the package cannot be extracted: {exc}") from exc


# --- transports -----------------------------------------------------------------------------


class _Sink:
    """A file that hashes what is written to it and stops when the fetch is cancelled.

    Deliberately not seekable: boto3's ``download_fileobj`` then writes parts in order.
    """

    def __init__(self, path: Path, cancel: threading.Event) -> None:
        self._file = path.open("wb")
        self._cancel = cancel
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        if self._cancel.is_set():
            raise _Cancelled
        try:
            self._file.write(data)
        except OSError as exc:  # the cache's disk, not the model's source: say so
            raise ModelError(f"cannot write to the model cache: {exc.strerror or exc}") from exc
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def reset(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self.size = 0

    def close(self) -> None:
        self._file.close()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def unreachable(uri: str, reason: str) -> ModelError:
    """The error for a model whose bytes cannot be had: ``<uri> unreachable: <reason>``, the URI
    without credentials or query."""
    return ModelError(f"{redact(uri)} unreachable: {reason}")


def transport_reason(exc: BaseException, host: str = "") -> str:
    """Pure: why a connection failed, in a few words ("connection refused", "cannot resolve host
    h (Name or service not known)"), from the exception or one it wraps (httpx → httpcore →
    the socket's OSError)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        reason = _reason_of(cause, host)
        if reason:
            return reason
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _reason_of(exc: BaseException, host: str) -> str:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "connection timed out" if isinstance(exc, httpx.ConnectTimeout) else "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host or '?'} ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({getattr(exc, 'verify_message', '') or exc})"
    if isinstance(exc, ssl.SSLError):  # reason is set when raised by the ssl module itself
        return f"TLS error ({getattr(exc, 'reason', '') or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return ""


def _fetch_to(uri: str, dest: Path, cancel: threading.Event, headers: Mapping[str, str]) -> str:
    """Copy the model at ``uri`` to ``dest``; its sha256."""
    sink = _Sink(dest, cancel)
    try:
        scheme = urlsplit(uri).scheme.lower()
        local = _local_path(uri)
        if local is not None:
            _copy_local(uri, local, sink)
        elif scheme in ("http", "https"):
            _download_http(uri, sink, headers, cancel)
        elif scheme in _EXTRAS:
            _download_extra(scheme, uri, sink)
        else:
            raise ModelError(
                f"{redact(uri)}: unsupported URI scheme {scheme!r} (file, http(s), s3, gs)"
            )
    finally:
        sink.close()
    return sink.hexdigest()


def _local_path(uri: str) -> Path | None:
    """The path of a ``file://`` URI (or a plain absolute path); None for remote URIs."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise unreachable(uri, f"a file URI on another host ({parts.hostname})")
        return Path(url2pathname(parts.path))
    if not parts.scheme and uri.startswith("/"):
        return Path(uri)
    return None


def _copy_local(uri: str, path: Path, sink: _Sink) -> None:
    if path.is_dir():
        raise ModelError(
            f"{redact(uri)} is a directory (register a file, or a zip of the folder tagged "
            f"'{PACKAGE_TAG}')"
        )
    try:
        source = path.open("rb")
    except FileNotFoundError as exc:
        raise unreachable(uri, "no such file") from exc
    except OSError as exc:
        raise unreachable(uri, transport_reason(exc)) from exc
    with source:
        while True:
            try:
                chunk = source.read(CHUNK_BYTES)
            except OSError as exc:  # e.g. EIO from a failing disk or a dropped NFS mount
                raise unreachable(uri, transport_reason(exc)) from exc
            if not chunk:
                return
            sink.write(chunk)


class _Transient(Exception):
    """A failure worth another attempt (5xx, 429, connection trouble)."""


def _download_http(
    uri: str, sink: _Sink, headers: Mapping[str, str], cancel: threading.Event
) -> None:
    host = urlsplit(uri).hostname or ""
    problem = ""
    for attempt in range(DOWNLOAD_ATTEMPTS):
        if attempt and cancel.wait(RETRY_BACKOFF * 2 ** (attempt - 1)):
            raise _Cancelled
        sink.reset()
        try:
            _http_once(uri, sink, headers)
            return
        except (_Transient, httpx.TransportError) as exc:
            problem = transport_reason(exc, host)
            log.warning(
                "model download attempt failed",
                uri=redact(uri),
                attempt=attempt + 1,
                error=problem,
            )
    raise unreachable(uri, f"{problem} (after {DOWNLOAD_ATTEMPTS} attempts)")


def _http_once(uri: str, sink: _Sink, headers: Mapping[str, str]) -> None:
    with (
        httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=True) as client,
        client.stream("GET", uri, headers=dict(headers)) as response,
    ):
        status = response.status_code
        if status >= 500 or status == httpx.codes.TOO_MANY_REQUESTS:
            raise _Transient(f"HTTP {status} {response.reason_phrase}".strip())
        if status != httpx.codes.OK:
            raise unreachable(uri, f"HTTP {status} {response.reason_phrase}".strip())
        for chunk in response.iter_bytes(CHUNK_BYTES):
            sink.write(chunk)
        announced = response.headers.get("content-length")
        if announced and announced.isdigit() and response.num_bytes_downloaded != int(announced):
            raise _Transient(f"got {response.num_bytes_downloaded} of {announced} bytes")


def _download_extra(scheme: str, uri: str, sink: _Sink) -> None:
    """``s3://bucket/key`` with boto3, ``gs://bucket/key`` with google-cloud-storage (extras:
    credentials from their standard environment and configuration files)."""
    module, extra = _EXTRAS[scheme]
    try:
        lib: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(
            f"{scheme}:// models need {module.split('.')[0]}: "
            f"pip install 'conveyor-agent[{extra}]' on this agent"
        ) from exc
    parts = urlsplit(uri)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    try:
        if scheme == "s3":
            lib.client("s3").download_fileobj(bucket, key, sink)
        else:
            lib.Client().bucket(bucket).blob(key).download_to_file(sink)
    except (_Cancelled, ModelError):
        raise
    except Exception as exc:  # the SDKs raise many types; report, don't guess
        raise unreachable(uri, str(exc) or type(exc).__name__) from exc


# --- the stage -----------------------------------------------------------------------------


async def fetch_input_models(
    api: ApiClient,
    task: TaskSpec,
    cache: ModelCache,
    console: Console,
    *,
    headers_for: Callable[[str], Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """Fetch every input model of ``task`` concurrently; the environment variables that expose
    them. Start it as an asyncio task beside the environment stage; cancelling it stops the
    downloads. Raises StageError("input model <name> (<id>): <why>") on the first failure,
    e.g. ``input model base (4f1c…): https://host/m.pt unreachable: connection refused``.
    Call ``cache.release(task.id)`` when the task has ended."""
    refs = task.input_models
    if not refs:
        return {}
    names = model_env_names(refs)
    cancel = threading.Event()
    jobs = [
        asyncio.ensure_future(
            _fetch_one(api, ref, var, cache, console, headers_for, cancel, task.id)
        )
        for ref, var in zip(refs, names, strict=True)
    ]
    try:
        done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
        for job in done:
            error = job.exception()
            if error is not None:
                raise error
    finally:
        cancel.set()  # stops the threads of unfinished downloads
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    return input_model_env([job.result() for job in jobs], names)


async def _fetch_one(
    api: ApiClient,
    ref: InputModelRef,
    var: str,
    cache: ModelCache,
    console: Console,
    headers_for: Callable[[str], Mapping[str, str]] | None,
    cancel: threading.Event,
    owner: str,
) -> FetchedModel:
    where = f"input model {ref.name} ({ref.model_id})"
    started = time.monotonic()
    try:
        source = await resolve_model(api, ref)
        headers = headers_for(source.uri) if headers_for else {}
        fetched = await asyncio.to_thread(
            cache.fetch, source, owner=owner, cancel=cancel, headers=headers, notice=console.info
        )
    except ModelError as exc:
        raise StageError(f"{where}: {exc}", stage="models") from exc
    except _Cancelled:
        raise asyncio.CancelledError from None
    console.info(_fetched_line(fetched, source, var, time.monotonic() - started))
    log.info("input model", model=ref.model_id, cache_hit=fetched.cache_hit, size=fetched.size)
    if not fetched.recorded:
        await _record_sha256(api, fetched, console)
    return fetched


async def resolve_model(api: ApiClient, ref: InputModelRef) -> ModelSource:
    """The model document as a :class:`ModelSource`; :class:`ModelError` if unusable."""
    try:
        info = await api.get_model(ref.model_id)
    except ApiError as exc:
        if exc.subcode == INVALID_MODEL_ID:
            raise ModelError("no such model on the server") from exc
        raise ModelError(f"the server could not resolve it: {exc}") from exc
    except TaskDocumentError as exc:
        raise ModelError(str(exc)) from exc
    if not info.uri:
        raise ModelError("the model has no URI (its weights were never uploaded)")
    return ModelSource(
        name=ref.name,
        model_id=ref.model_id,
        uri=info.uri,
        sha256=expected_sha256(info.metadata),
        package=PACKAGE_TAG in info.system_tags,
    )


def _fetched_line(fetched: FetchedModel, source: ModelSource, var: str, seconds: float) -> str:
    what = "package" if source.package else "file"
    digest = f"sha256 {fetched.sha256[:SHORT_SHA]}"
    if fetched.cache_hit:
        check = "re-verified" if fetched.rehashed else "size and times unchanged"
        how = f"cache hit ({human_size(fetched.size)} {what}, {digest} {check})"
    else:
        check = "verified" if fetched.recorded else "computed"
        how = (
            f"fetched {redact(source.uri)} ({human_size(fetched.size)} {what}, "
            f"{seconds:.1f} s, {digest} {check})"
        )
    return f"model {source.name}: {how} → ${{{var}}}"


async def _record_sha256(api: ApiClient, fetched: FetchedModel, console: Console) -> None:
    try:
        await api.add_model_metadata(fetched.model_id, {SHA256_METADATA_KEY: fetched.sha256})
    except ApiError as exc:
        console.info(f"model {fetched.name}: could not record its sha256 on the server ({exc})")
        log.warning("model sha256 not recorded", model=fetched.model_id, error=str(exc))
        return
    console.info(f"model {fetched.name}: sha256 recorded on the model (metadata sha256)")
