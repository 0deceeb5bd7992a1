"""Pure document filters of the list endpoints: tag expressions, ``_all_``/``_any_`` pattern
conditions, dotted-field equality and free-text search, as ClearML documents them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.server.errors import bad_request

_OP_ALL = ("__$all", "__$and")
_OP_ANY = "__$or"
_OP_NOT = "__$not"
_PATTERN_KEYS = frozenset({"fields", "pattern"})
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class PatternCondition:
    """``_all_`` (every field matches) or ``_any_`` (at least one does): a regex searched in
    the string value of each dotted field (any string item, for a list)."""

    fields: tuple[tuple[str, ...], ...]
    pattern: re.Pattern[str]
    every: bool


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
    fields, pattern = value.get("fields"), value.get("pattern")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise bad_request(f"field '{name}.fields' must be a non-empty list of field names")
    if not isinstance(pattern, str):
        raise bad_request(f"field '{name}.pattern' must be a string (a regular expression)")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise bad_request(
            f"field '{name}.pattern' is not a valid regular expression: {exc}"
        ) from exc
    paths = tuple(tuple(f.split(".")) for f in fields)
    return PatternCondition(paths, compiled, every=name == "_all_")


def _searched(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def pattern_match(doc: Mapping[str, Any], condition: PatternCondition) -> bool:
    def one(path: tuple[str, ...]) -> bool:
        found, value = path_value(doc, path)
        return found and any(condition.pattern.search(s) for s in _searched(value))

    results = (one(path) for path in condition.fields)
    return all(results) if condition.every else any(results)


def parse_field_filter(key: str, value: Any) -> FieldFilter:
    """A dotted-key equality filter; an operator object (``{"$gt": 0}``) is refused by name."""
    if isinstance(value, Mapping):
        ops = ", ".join(repr(k) for k in value) or "an empty object"
        raise bad_request(
            f"field '{key}': operator {ops} is not supported (a field filter is a value or a "
            "list of values)"
        )
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item is not None and not isinstance(item, _SCALARS):
            raise bad_request(f"field '{key}' must be a value or a list of values")
    return FieldFilter(tuple(key.split(".")), tuple(values))


def field_match(doc: Mapping[str, Any], flt: FieldFilter) -> bool:
    found, value = path_value(doc, flt.path)
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
