"""Shared list-endpoint plumbing: which request fields each list endpoint takes, the parsed
query, filtering, ordering and (clamped) paging.

The rule: a field that would change which documents are returned and that the endpoint does
not implement is refused with 400 naming it; fields that only change presentation are listed
in ``ListSpec.ignored`` (and in docs/clearml-compat.md). A dotted key (``runtime.x``) is a
field filter where the endpoint takes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.server.errors import bad_request
from agent.server.fields import Body, opt_bool, opt_int, opt_str, opt_str_list
from agent.server.filters import (
    FieldFilter,
    PatternCondition,
    RangeFilter,
    field_match,
    parse_field_filter,
    parse_pattern,
    pattern_match,
    tags_match,
    text_match,
)
from agent.server.store import valid_regex

HIDDEN_TAG = "hidden"
MAX_PAGE_SIZE = 10_000  # a bigger page_size is clamped to this, never refused
_FIELD_NAME = re.compile(r"^-?[A-Za-z_@][A-Za-z0-9_.]*$")
# Read by parse_query for every list endpoint that uses it.
COMMON = frozenset(
    {
        "id",
        "name",
        "tags",
        "system_tags",
        "only_fields",
        "order_by",
        "page",
        "page_size",
        "search_hidden",
        "search_text",
        "_all_",
        "_any_",
        "_and_",
        "_or_",
    }
)
TRANSPORT = frozenset({"method"})  # the SDK's request plumbing, sent in every body


@dataclass(frozen=True)
class ListSpec:
    """What one list endpoint takes besides ``COMMON``: the fields its handler reads, the
    presentation-only fields it ignores, whether dotted keys are field filters, and which
    document fields ``search_text`` looks in."""

    endpoint: str
    handled: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()
    field_filters: bool = True
    text_fields: tuple[str, ...] = ("id", "name")


@dataclass(frozen=True)
class ListQuery:
    ids: list[str] | None
    name: str | None
    tags: list[str]
    system_tags: list[str]
    only_fields: list[str] | None
    order_by: list[str]
    page: int
    page_size: int
    search_hidden: bool
    search_text: str = ""
    patterns: tuple[PatternCondition, ...] = ()
    field_filters: tuple[FieldFilter | RangeFilter, ...] = ()
    text_fields: tuple[str, ...] = field(default=("id", "name"))


def check_fields(body: Body, spec: ListSpec) -> list[FieldFilter | RangeFilter]:
    """400 for the first field ``spec`` neither reads nor ignores; dotted keys become filters."""
    filters: list[FieldFilter | RangeFilter] = []
    for key in body:
        if key in COMMON or key in TRANSPORT or key in spec.handled or key in spec.ignored:
            continue
        if spec.field_filters and "." in key:
            filters.append(parse_field_filter(key, body[key]))
            continue
        raise bad_request(
            f"field '{key}' is not supported by {spec.endpoint} (refused rather than ignored: "
            "it would change the answer)"
        )
    return filters


def _paging(body: Body) -> tuple[int, int]:
    page = opt_int(body, "page", 0) or 0
    page_size = opt_int(body, "page_size", 0) or 0
    if page < 0 or page_size < 0:
        raise bad_request("fields 'page' and 'page_size' must be >= 0")
    return page, page_size


def parse_query(body: Body, spec: ListSpec) -> ListQuery:
    filters = check_fields(body, spec)
    name = opt_str(body, "name") or None
    if name is not None and not valid_regex(name):
        raise bad_request(f"field 'name' is not a valid regular expression: {name!r}")
    order_by = opt_str_list(body, "order_by") or []
    for item in order_by:
        if not _FIELD_NAME.match(item):
            raise bad_request(f"field 'order_by' has an invalid field name {item!r}")
    page, page_size = _paging(body)
    patterns = [parse_pattern(key, body.get(key)) for key in ("_all_", "_any_", "_and_", "_or_")]
    return ListQuery(
        ids=opt_str_list(body, "id"),
        name=name,
        tags=opt_str_list(body, "tags") or [],
        system_tags=opt_str_list(body, "system_tags") or [],
        only_fields=opt_str_list(body, "only_fields"),
        order_by=order_by,
        page=page,
        page_size=page_size,
        search_hidden=opt_bool(body, "search_hidden"),
        search_text=opt_str(body, "search_text").strip(),
        patterns=tuple(p for p in patterns if p is not None),
        field_filters=tuple(filters),
        text_fields=spec.text_fields,
    )


def keep(doc: Mapping[str, Any], query: ListQuery, show_hidden: bool = False) -> bool:
    """Whether ``doc`` passes the query's filters (not ids/name: the SQL does those). Hidden
    documents pass with ``search_hidden``, ``show_hidden``, or when asked for by id."""
    system_tags = doc.get("system_tags") or []
    visible = query.search_hidden or show_hidden or bool(query.ids)
    if not visible and HIDDEN_TAG in system_tags:
        return False
    if not tags_match(doc.get("tags") or [], query.tags):
        return False
    if not tags_match(system_tags, query.system_tags):
        return False
    if query.search_text and not text_match(doc, query.search_text, query.text_fields):
        return False
    if not all(pattern_match(doc, p) for p in query.patterns):
        return False
    return all(field_match(doc, f) for f in query.field_filters)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def order_and_page(docs: list[dict[str, Any]], query: ListQuery) -> list[dict[str, Any]]:
    """Sort by ``order_by`` (``-`` descending), then cut the page. A ``page_size`` over
    ``MAX_PAGE_SIZE`` keeps its page's start and returns at most ``MAX_PAGE_SIZE`` documents."""
    for item in reversed(query.order_by):
        if item.lstrip("-").startswith("@"):  # @text_score: no scores here, order kept
            continue
        descending = item.startswith("-")
        path = item.lstrip("-").split(".")

        def value(doc: dict[str, Any], path: Sequence[str] = path) -> tuple[int, Any]:
            current: Any = doc
            for part in path:
                current = current.get(part) if isinstance(current, dict) else None
            return _sort_key(current)

        docs.sort(key=value, reverse=descending)
    if query.page_size:
        start = query.page * query.page_size
        return docs[start : start + min(query.page_size, MAX_PAGE_SIZE)]
    return docs
