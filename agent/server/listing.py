"""Shared list-endpoint plumbing: name regexes, ordering, paging, hidden filtering."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.server.documents import tags_match
from agent.server.errors import bad_request
from agent.server.fields import Body, opt_bool, opt_int, opt_str, opt_str_list
from agent.server.store import valid_regex

HIDDEN_TAG = "hidden"
MAX_PAGE_SIZE = 10_000
_FIELD_NAME = re.compile(r"^-?[A-Za-z_][A-Za-z0-9_.]*$")


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


def parse_query(body: Body) -> ListQuery:
    name = opt_str(body, "name") or None
    if name is not None and not valid_regex(name):
        raise bad_request(f"field 'name' is not a valid regular expression: {name!r}")
    order_by = opt_str_list(body, "order_by") or []
    for field in order_by:
        if not _FIELD_NAME.match(field):
            raise bad_request(f"field 'order_by' has an invalid field name {field!r}")
    page = opt_int(body, "page", 0) or 0
    page_size = opt_int(body, "page_size", 0) or 0
    if page < 0 or page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise bad_request(f"'page' must be >= 0 and 'page_size' between 0 and {MAX_PAGE_SIZE}")
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
    )


def keep(doc: Mapping[str, Any], query: ListQuery) -> bool:
    system_tags = doc.get("system_tags") or []
    if not query.search_hidden and HIDDEN_TAG in system_tags:
        return False
    return tags_match(doc.get("tags") or [], query.tags) and tags_match(
        system_tags, query.system_tags
    )


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def order_and_page(docs: list[dict[str, Any]], query: ListQuery) -> list[dict[str, Any]]:
    for field in reversed(query.order_by):
        descending = field.startswith("-")
        path = field.lstrip("-").split(".")

        def value(doc: dict[str, Any], path: Sequence[str] = path) -> tuple[int, Any]:
            current: Any = doc
            for part in path:
                current = current.get(part) if isinstance(current, dict) else None
            return _sort_key(current)

        docs.sort(key=value, reverse=descending)
    if query.page_size:
        start = query.page * query.page_size
        return docs[start : start + query.page_size]
    return docs
