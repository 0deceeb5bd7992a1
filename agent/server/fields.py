"""Typed readers for request bodies: a missing or mistyped field is a 400 that names it.

Handlers read only the fields they know; the list endpoints also refuse the fields they do
not know (``listing.check_fields``: refuse, never ignore).
Values from the query string arrive as strings, so numbers and booleans also accept their
usual string spellings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.server.errors import bad_request

Body = Mapping[str, Any]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _wrong(name: str, expected: str, value: object) -> Exception:
    return bad_request(f"field '{name}' must be {expected}, got {_type_name(value)}")


def req_str(body: Body, name: str) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise bad_request(f"field '{name}' is required")
    if not isinstance(value, str):
        raise _wrong(name, "a string", value)
    return value


def opt_str(body: Body, name: str, default: str = "") -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _wrong(name, "a string", value)
    return value


def opt_bool(body: Body, name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _wrong(name, "a boolean", value)


INT64 = (-(2**63), 2**63 - 1)  # what SQLite stores; a larger integer is refused, not a 500


def opt_int(body: Body, name: str, default: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        raise _wrong(name, "an integer", value)
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise _wrong(name, "an integer", value)
    if not INT64[0] <= number <= INT64[1]:
        raise bad_request(f"field '{name}' is out of range (a 64-bit integer)")
    return number


def opt_float(body: Body, name: str, default: float | None = None) -> float | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        raise _wrong(name, "a number", value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _wrong(name, "a number", value)


def opt_str_list(body: Body, name: str) -> list[str] | None:
    """A list of strings; a single string is accepted as a one-item list. None if absent."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _wrong(name, "a list of strings", value)


def opt_dict(body: Body, name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _wrong(name, "an object", value)
    return value


def opt_list(body: Body, name: str) -> list[Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _wrong(name, "a list", value)
    return value


def check_str_values(value: Mapping[str, Any], name: str) -> dict[str, str | None]:
    """An object whose values must all be strings (or null), e.g. ``container``."""
    for key, item in value.items():
        if item is not None and not isinstance(item, str):
            raise _wrong(f"{name}.{key}", "a string", item)
    return dict(value)
