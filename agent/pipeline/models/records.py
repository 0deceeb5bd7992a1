"""The input-model stage's values: the model record as the server gives it, the fetched copy,
the errors, and small pure helpers (environment names, redacted URIs, sizes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import structlog

from agent.api.models import InputModelRef

log = structlog.get_logger()

SHA256_METADATA_KEY = "sha256"
PACKAGE_TAG = "package"
INPUT_MODEL_ENV = "CONVEYOR_INPUT_MODEL"
INPUT_MODEL_ENV_PREFIX = "CONVEYOR_INPUT_MODEL_"
CHUNK_BYTES = 1 << 20
SHORT_SHA = 12
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE_VAR_CHARS = re.compile(r"[^A-Za-z0-9]+")
UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+|^\.+")


class ModelError(Exception):
    """A model could not be fetched; the message says why (the caller adds which model)."""


class Cancelled(Exception):
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


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number: matches nothing
        return scheme, "", -1
    return scheme, (parts.hostname or "").lower(), port


def under_files_host(uri: str, files_host: str) -> bool:
    """Pure: ``uri`` is an object of the files host ``files_host`` (same scheme, host and port,
    its path below the files host's path), as the clearml SDK decides where to send its token."""
    if not files_host:
        return False
    target, base = urlsplit(uri), urlsplit(files_host.rstrip("/"))
    if base.scheme.lower() not in _DEFAULT_PORTS or _origin(target) != _origin(base):
        return False
    return target.path.startswith(base.path + "/")


def files_host_auth(files_host: str, token: str) -> Callable[[str], Mapping[str, str]]:
    """``headers_for`` of :func:`fetch_input_models`: the control plane's API token as
    ``Authorization: Bearer`` for URIs under the configured files host only (never another
    host: httpx also drops the header on a redirect to another origin)."""

    def headers_for(uri: str) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {token}"} if under_files_host(uri, files_host) else {}

    return headers_for
