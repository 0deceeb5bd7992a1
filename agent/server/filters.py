"""Pure document filters of the list endpoints: tag expressions, ``_all_``/``_any_`` pattern
conditions, dotted-field equality and free-text search, as ClearML documents them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.server.errors import bad_request

_OP_ALL = ("__$all", "__$and")
_OP_ANY = "__$or"
_OP_NOT = "__$not"
_PATTERN_KEYS = frozenset({"fields", "pattern", "datetime"})
_EVERY = ("_all_", "_and_")  # the others (_any_, _or_): at least one field
_SCALARS = (str, int, float, bool)
_BOUND = re.compile(r"^(>=|>|<=|<)?\s*(.+)$")
_RANGE_PREFIX = "last_metrics."  # [min, max] is a range there (the SDK's TaskTrigger)


@dataclass(frozen=True)
class TimeBound:
    """``>2024-01-01T00:00:00``: a comparison with a date (ISO 8601, naive is UTC, or epoch)."""

    op: str
    when: datetime

    def holds(self, value: Any) -> bool:
        stamp = _as_datetime(value)
        if stamp is None:
            return False
        return {
            ">": stamp > self.when,
            ">=": stamp >= self.when,
            "<": stamp < self.when,
            "<=": stamp <= self.when,
        }[self.op]


@dataclass(frozen=True)
class PatternCondition:
    """``_all_``/``_and_`` (every field matches) or ``_any_``/``_or_`` (at least one does): a
    regex searched in the string value of each dotted field (any string item, for a list), or
    date bounds (``datetime``) that the field's date must all meet."""

    fields: tuple[tuple[str, ...], ...]
    pattern: re.Pattern[str] | None
    every: bool
    bounds: tuple[TimeBound, ...] = ()

    def field_matches(self, value: Any) -> bool:
        if self.pattern is not None:
            return any(self.pattern.search(s) for s in _searched(value))
        return all(bound.holds(value) for bound in self.bounds)


@dataclass(frozen=True)
class RangeFilter:
    """``{"last_metrics.<m>.<v>.max_value": [low, high]}``: inclusive, ``null`` = open."""

    path: tuple[str, ...]
    low: float | None
    high: float | None


def _from_epoch(value: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):  # out of range, or nan
        return None


def _as_datetime(value: Any) -> datetime | None:
    """A date from ISO 8601 text (naive = UTC) or epoch seconds; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch(value)
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        try:
            return _from_epoch(float(value))
        except ValueError:
            return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def parse_time_bounds(name: str, values: Any) -> tuple[TimeBound, ...]:
    """``["<op>date", ...]`` (op one of > >= < <=, default >=); 400 naming the bad one."""
    items = values if isinstance(values, list) else [values]
    bounds = []
    for item in items:
        match = _BOUND.match(item) if isinstance(item, str) else None
        when = _as_datetime(match.group(2)) if match else _as_datetime(item)
        if when is None:
            raise bad_request(f"field '{name}' has an invalid date constraint {item!r}")
        bounds.append(TimeBound((match.group(1) if match else None) or ">=", when))
    return tuple(bounds)


@dataclass(frozen=True)
class FieldFilter:
    """``{"a.b.c": value | [values]}``: the field equals one of the values (or, for a list
    field, holds one of them)."""

    path: tuple[str, ...]
    values: tuple[Any, ...]


def path_value(doc: Any, path: Sequence[str]) -> tuple[bool, Any]:
    """(found, value) of a dotted path in nested objects."""
    current = doc
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def parse_pattern(name: str, value: Any) -> PatternCondition | None:
    """The ``_all_`` / ``_any_`` condition in a request; 400 naming what is wrong."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise bad_request(f"field '{name}' must be an object with 'fields' and 'pattern'")
    unknown = sorted(set(value) - _PATTERN_KEYS)
    if unknown:
        raise bad_request(f"field '{name}.{unknown[0]}' is not supported (only fields, pattern)")
    fields = value.get("fields")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise bad_request(f"field '{name}.fields' must be a non-empty list of field names")
    paths = tuple(tuple(f.split(".")) for f in fields)
    every = name in _EVERY
    if ("pattern" in value) == ("datetime" in value):
        raise bad_request(f"field '{name}' needs one of 'pattern' or 'datetime'")
    if "datetime" in value:
        bounds = parse_time_bounds(f"{name}.datetime", value["datetime"])
        return PatternCondition(paths, None, every, bounds)
    pattern = value.get("pattern")
    if not isinstance(pattern, str):
        raise bad_request(f"field '{name}.pattern' must be a string (a regular expression)")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise bad_request(f"field '{name}.pattern' is not a valid regular expression") from exc
    return PatternCondition(paths, compiled, every)


def _searched(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def pattern_match(doc: Mapping[str, Any], condition: PatternCondition) -> bool:
    def one(path: tuple[str, ...]) -> bool:
        found, value = path_value(doc, path)
        return found and condition.field_matches(value)

    results = (one(path) for path in condition.fields)
    return all(results) if condition.every else any(results)


def parse_field_filter(key: str, value: Any) -> FieldFilter | RangeFilter:
    """A dotted-key equality filter (a range under ``last_metrics.``); an operator object
    (``{"$gt": 0}``) is refused by name."""
    if isinstance(value, Mapping):
        ops = ", ".join(repr(k) for k in value) or "an empty object"
        raise bad_request(
            f"field '{key}': operator {ops} is not supported (a field filter is a value or a "
            "list of values)"
        )
    if key.startswith(_RANGE_PREFIX) and isinstance(value, list):
        if len(value) != 2 or not all(_number_or_null(v) for v in value):
            raise bad_request(f"field '{key}' must be a range [low, high] (null: open)")
        return RangeFilter(tuple(key.split(".")), value[0], value[1])
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item is not None and not isinstance(item, _SCALARS):
            raise bad_request(f"field '{key}' must be a value or a list of values")
    return FieldFilter(tuple(key.split(".")), tuple(values))


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def field_match(doc: Mapping[str, Any], flt: FieldFilter | RangeFilter) -> bool:
    found, value = path_value(doc, flt.path)
    if isinstance(flt, RangeFilter):
        if not found or not _number_or_null(value) or value is None:
            return False
        return (flt.low is None or value >= flt.low) and (flt.high is None or value <= flt.high)
    if not found:
        return None in flt.values
    if isinstance(value, list):
        return any(v in flt.values for v in value)
    return value in flt.values


def text_match(doc: Mapping[str, Any], text: str, fields: Iterable[str]) -> bool:
    """Free-text search: every word of ``text`` appears (case-insensitive) in one of ``fields``."""
    haystack = " ".join(str(doc.get(f) or "") for f in fields).lower()
    return all(word in haystack for word in text.lower().split())


def tags_match(have: Iterable[str], wanted: Iterable[str]) -> bool:
    """ClearML tag filters. Plain tags are joined with OR; ``__$all``/``__$and`` starts a group
    joined with AND, ``__$or`` one joined with OR; ``__$not`` negates the next tag; groups are
    ANDed; ``-x`` excludes ``x`` whatever the groups say."""
    present = set(have)
    groups: list[tuple[bool, list[bool]]] = [(False, [])]
    negate = False
    excluded = False
    for tag in wanted:
        if tag in _OP_ALL or tag == _OP_ANY:
            groups.append((tag in _OP_ALL, []))
        elif tag == _OP_NOT:
            negate = True
        elif tag.startswith("-") and not negate:
            excluded = excluded or tag[1:] in present
        else:
            groups[-1][1].append((tag in present) != negate)
            negate = False
    if excluded:
        return False
    return all((all(terms) if every else any(terms)) for every, terms in groups if terms)
