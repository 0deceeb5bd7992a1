"""Fetching a model by its URI's scheme: a local file, http(s) with retries, s3:// and gs:// through
their optional extras; every byte hashed on the way, a cancel honoured between chunks.
"""

from __future__ import annotations

import hashlib
import importlib
import socket
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import httpx
import structlog

from agent.pipeline.models.records import CHUNK_BYTES, PACKAGE_TAG, Cancelled, ModelError, redact

log = structlog.get_logger()

DOWNLOAD_ATTEMPTS = 3
RETRY_BACKOFF = 1.0  # seconds before the second attempt; doubled after each failure
HTTP_TIMEOUT = httpx.Timeout(30.0, read=300.0)
_EXTRAS = {"s3": ("boto3", "s3"), "gs": ("google.cloud.storage", "gcs")}


def local_stamp(uri: str) -> str:
    """For a local file, size and modification time: a changed file is not a cache hit."""
    path = _local_path(uri)
    if path is None:
        return ""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


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
            raise Cancelled
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


def fetch_to(uri: str, dest: Path, cancel: threading.Event, headers: Mapping[str, str]) -> str:
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
            raise Cancelled
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
    except (Cancelled, ModelError):
        raise
    except Exception as exc:  # the SDKs raise many types; report, don't guess
        raise unreachable(uri, str(exc) or type(exc).__name__) from exc
