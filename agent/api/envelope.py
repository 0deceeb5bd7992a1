"""The wire format, pure: URLs, the ``{meta, data}`` envelope, token expiry.

Nothing outside ``agent/api`` builds a URL or reads an envelope; these functions are the only
place that knows their shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt

from agent.api.errors import ProtocolError, error_from

API_VERSION = "2.31"
LOGIN_ENDPOINT = "auth.login"
RESULT_OK = frozenset({200, 202})
JSON = "application/json"
JSON_LINES = "application/json-lines"


def endpoint_url(base_url: str, endpoint: str) -> str:
    """``{base}/v2.31/{service}.{action}``; login is unversioned, as the SDK sends it."""
    base = base_url.rstrip("/")
    if endpoint == LOGIN_ENDPOINT:
        return f"{base}/{endpoint}"
    return f"{base}/v{API_VERSION}/{endpoint}"


def encode_body(body: Mapping[str, Any] | None) -> bytes:
    return json.dumps(dict(body or {}), separators=(",", ":")).encode()


def encode_json_lines(items: Iterable[Mapping[str, Any]]) -> bytes:
    return "\n".join(json.dumps(dict(i), separators=(",", ":")) for i in items).encode()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_envelope(status: int, content: bytes, endpoint: str) -> dict[str, Any]:
    """The ``data`` of a successful response; a typed :class:`ApiError` for anything else.

    A body that is not a JSON object with ``meta`` is a :class:`ProtocolError` even when the HTTP
    status is 200: the SDK treats it the same way, and it usually means a proxy answered.
    """
    try:
        doc = json.loads(content) if content else None
    except ValueError:
        doc = None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        snippet = content[:200].decode("utf-8", errors="replace")
        raise ProtocolError(
            status, 0, f"HTTP {status}, not a ClearML response: {snippet!r}", endpoint
        )
    assert isinstance(doc, dict)
    code = _int(meta.get("result_code", status)) or status
    if status >= 400 or code not in RESULT_OK:
        message = str(meta.get("result_msg") or f"HTTP {status}")
        raise error_from(
            code if code >= 400 else status, _int(meta.get("result_subcode")), message, endpoint
        )
    data = doc.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProtocolError(
            status, 0, f"response data is {type(data).__name__}, not an object", endpoint
        )
    return data


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (the server is the verifier);
    None when the token is not a JWT or carries no ``exp``."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def require(data: Mapping[str, Any], key: str, kind: type, endpoint: str) -> Any:
    """``data[key]`` checked to be a ``kind``; a :class:`ProtocolError` naming it otherwise."""
    value = data.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(
            200,
            0,
            f"response field {key!r} is {type(value).__name__}, expected {kind.__name__}",
            endpoint,
        )
    return value


def chunk_json_lines(events: Sequence[Mapping[str, Any]], limit: int) -> list[bytes]:
    """Pure: the events as JSON-lines bodies of at most ``limit`` bytes (one event may exceed
    it alone: it is sent alone)."""
    bodies: list[bytes] = []
    lines: list[bytes] = []
    size = 0
    for event in events:
        line = encode_json_lines([event])
        if lines and size + len(line) + 1 > limit:
            bodies.append(b"\n".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        bodies.append(b"\n".join(lines))
    return bodies
