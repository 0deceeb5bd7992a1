"""Request bodies: read under a size cap, parsed as JSON (or json-lines), refused when harmful.

A body over ``max_body`` bytes is 413 before it is read in full (its Content-Length, or the
bytes received so far). A body that is not UTF-8 JSON, or that no handler could store or answer
safely, is 400/10: nested deeper than ``MAX_DEPTH``, a number that is not finite (NaN,
Infinity, 1e999: SQLite's JSON functions and clients reject them), a string with a lone UTF-16
surrogate (it cannot be stored as UTF-8). Those checks cost a walk of the parsed body only when
a C-speed scan of the text says one may be there, so a large events batch pays nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from agent.server.errors import MALFORMED_BODY, ApiError, bad_request

MAX_DEPTH = 100  # nesting of objects and arrays; ClearML documents nest a handful of levels
PAYLOAD_TOO_LARGE = 413
# A parsed body can take ~25 times its size (16 MiB of ``{},`` is 5.6 M dicts, ~430 MB): at
# most LARGE_SLOTS bodies over LARGE_BODY bytes are parsed and handled at once (the others
# wait their turn in their worker thread), and none of them on the event loop.
LARGE_BODY = 1024 * 1024
LARGE_SLOTS = 2
_large = threading.BoundedSemaphore(LARGE_SLOTS)
_JSON_LINES_ENDPOINTS = frozenset({"events.add_batch"})
# A number that may not fit a float (a 3-digit exponent, or 300 digits), a \u escape of a
# UTF-16 surrogate: only then is the parsed body walked.
_SUSPECT = re.compile(r"[eE][+-]?\d{3}|\d{300}|\\u[dD][89a-fA-F]")


def too_large(limit: int, what: str) -> ApiError:
    return ApiError(
        PAYLOAD_TOO_LARGE, 0, f"request body {what} the limit of {limit} bytes ({limit >> 20} MiB)"
    )


async def read_capped(
    stream: AsyncIterator[bytes], content_length: str | None, limit: int
) -> bytes:
    """The whole body, or 413 as soon as it is known to pass ``limit`` (nothing more is read)."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError as exc:
            raise bad_request("invalid Content-Length header", MALFORMED_BODY) from exc
        if declared > limit:
            raise too_large(limit, f"of {declared} bytes (Content-Length) passes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise too_large(limit, "passes")
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def large_body_slot(size: int) -> Iterator[None]:
    """Holds one of the LARGE_SLOTS while a body of ``size`` bytes is handled, if it is large."""
    if size <= LARGE_BODY:
        yield
        return
    with _large:
        yield


def _refuse_constant(name: str) -> Any:
    raise bad_request(f"malformed JSON body: {name} is not a number JSON allows", MALFORMED_BODY)


def _loads(text: str, what: str) -> Any:
    """``json.loads`` whose every failure is a 400/10 naming ``what``."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"malformed JSON {what}: {exc.msg} (at {exc.pos})", MALFORMED_BODY
        ) from exc
    except RecursionError as exc:
        raise bad_request(
            f"malformed JSON {what}: nested more than {MAX_DEPTH} levels", MALFORMED_BODY
        ) from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise bad_request(f"malformed JSON {what}: {exc}", MALFORMED_BODY) from exc


def _check_item(item: Any, depth: int, stack: list[tuple[Any, int]]) -> None:
    if isinstance(item, dict | list):
        if depth > MAX_DEPTH:
            raise bad_request(f"request body nests more than {MAX_DEPTH} levels", MALFORMED_BODY)
        stack.append((item, depth))
    elif isinstance(item, float) and not math.isfinite(item):
        raise bad_request("request body has a number too large for a float", MALFORMED_BODY)
    elif isinstance(item, str):
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise bad_request(
                "request body has a string with a lone UTF-16 surrogate", MALFORMED_BODY
            ) from exc


def check_values(values: Iterable[Any], text: str) -> None:
    """400/10 if a value parsed from ``text`` nests too deep or holds what cannot be stored;
    walks them only when ``text`` shows a reason to."""
    deep = text.count("{") + text.count("[") > MAX_DEPTH
    if not deep and _SUSPECT.search(text) is None:
        return
    stack: list[tuple[Any, int]] = []
    for value in values:
        _check_item(value, 1, stack)
        _walk(stack)


def _walk(stack: list[tuple[Any, int]]) -> None:
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                _check_item(key, depth + 1, stack)
                _check_item(item, depth + 1, stack)
        else:
            for item in node:
                _check_item(item, depth + 1, stack)


def _json_lines(text: str) -> tuple[Any, ...]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            items.append(_loads(line, f"on line {number}"))
    return tuple(items)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(
            f"request body must be a JSON object, got {type(value).__name__}", MALFORMED_BODY
        )
    return value


def _lines_body(text: str, content_type: str) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """events.add_batch's forms: json-lines, a JSON array, ``{"requests": [...]}``, one event."""
    if "json-lines" in content_type or ("\n" in text and text[0] == "{"):
        try:
            single = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return {}, _json_lines(text)
        if isinstance(single, list):
            return {}, tuple(single)
        if isinstance(single, dict) and "requests" in single:
            return single, ()
        return {}, (single,)
    value = _loads(text, "body")
    if isinstance(value, list):
        return {}, tuple(value)
    return _object(value), ()


def parse_body(
    raw: bytes, content_type: str, endpoint: str
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """(body object, json-lines items). Raises 400/10 for anything that is not safe JSON."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise bad_request("request body is not UTF-8", MALFORMED_BODY) from exc
    if not text:
        return {}, ()
    if endpoint in _JSON_LINES_ENDPOINTS:
        body, lines = _lines_body(text, content_type)
    else:
        body, lines = _object(_loads(text, "body")), ()
    check_values((body, *lines), text)
    return body, lines
