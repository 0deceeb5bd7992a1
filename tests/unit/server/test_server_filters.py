"""List filters: tag expressions, _all_/_any_ patterns, field filters, the field rule, paging."""

from __future__ import annotations

import pytest

from agent.server.errors import ApiError
from agent.server.filters import (
    field_match,
    parse_field_filter,
    parse_pattern,
    parse_time_bounds,
    pattern_match,
    tags_match,
    text_match,
)
from agent.server.listing import MAX_PAGE_SIZE, ListSpec, keep, order_and_page, parse_query
from agent.server.projects import exact_name

SPEC = ListSpec("tasks.get_all", handled=frozenset({"status"}))


def test_all_and_any_patterns() -> None:
    doc = {"runtime": {"pipeline_job_hash": "abc123"}, "name": "train", "comment": "x"}
    exact = parse_pattern("_all_", {"fields": ["runtime.pipeline_job_hash"], "pattern": "^abc123$"})
    assert exact is not None and pattern_match(doc, exact)
    other = parse_pattern("_all_", {"fields": ["runtime.pipeline_job_hash"], "pattern": "^abc$"})
    assert other is not None and not pattern_match(doc, other)
    both = parse_pattern("_all_", {"fields": ["name", "comment"], "pattern": "train"})
    assert both is not None and not pattern_match(doc, both)
    either = parse_pattern("_any_", {"fields": ["name", "comment"], "pattern": "train"})
    assert either is not None and pattern_match(doc, either)
    missing = parse_pattern("_any_", {"fields": ["runtime.nothing"], "pattern": ".*"})
    assert missing is not None and not pattern_match(doc, missing)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("x", "'_all_' must be an object"),
        ({"fields": [], "pattern": "a"}, "'_all_.fields'"),
        ({"fields": ["a"], "pattern": 3}, "'_all_.pattern'"),
        ({"fields": ["a"], "pattern": "("}, "not a valid regular expression"),
        ({"fields": ["a"], "pattern": "a", "flags": "i"}, "'_all_.flags'"),
        ({"fields": ["a"], "pattern": "a", "datetime": [">1"]}, "one of 'pattern' or 'datetime'"),
        ({"fields": ["a"], "datetime": ["> not a date"]}, "invalid date constraint"),
        ({"fields": ["a"], "datetime": [1e300]}, "invalid date constraint"),
        ({"fields": ["a"], "datetime": [">nan"]}, "invalid date constraint"),
    ],
)
def test_bad_pattern_conditions_are_refused(value: object, words: str) -> None:
    with pytest.raises(ApiError, match=words):
        parse_pattern("_all_", value)


def test_tag_expressions() -> None:
    assert tags_match(["a", "b"], [])
    assert tags_match(["a"], ["a", "z"])
    assert not tags_match(["b"], ["a"])
    assert not tags_match(["a", "hidden"], ["-hidden"])
    assert tags_match(["a"], ["-hidden"])
    assert tags_match(["dataset"], ["__$all", "dataset", "__$not", "archived"])
    assert not tags_match(["dataset", "archived"], ["__$all", "dataset", "__$not", "archived"])
    assert not tags_match(["a"], ["__$all", "a", "b"])
    wanted = ["__$all", "a", "b", "__$or", "d", "__$not", "e", "__$and", "__$or", "f", "g"]
    assert tags_match(["a", "b", "g"], wanted)  # (d or not e) holds: no e
    assert not tags_match(["a", "b", "e", "g"], wanted)
    assert not tags_match(["a", "b"], wanted)  # (f or g) fails


def test_field_filters_and_operators() -> None:
    flt = parse_field_filter("metadata.k.value", "v")
    assert field_match({"metadata": {"k": {"value": "v"}}}, flt)
    assert not field_match({"metadata": {}}, flt)
    assert field_match({"a": {"b": ["x", "y"]}}, parse_field_filter("a.b", ["y", "z"]))
    with pytest.raises(ApiError, match=r"'runtime.progress': operator '\$gt'"):
        parse_field_filter("runtime.progress", {"$gt": 0})


def test_text_search() -> None:
    doc = {"id": "abc", "name": "Train Model", "comment": "dsh123 used"}
    assert text_match(doc, "train", ("id", "name", "comment"))
    assert text_match(doc, "dsh123 model", ("id", "name", "comment"))
    assert not text_match(doc, "dsh999", ("id", "name", "comment"))


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(ApiError, match=r"'user' is not supported by tasks\.get_all"):
        parse_query({"user": ["u"]}, SPEC)
    with pytest.raises(ApiError, match="operator"):
        parse_query({"runtime.progress": {"$gt": 0}}, SPEC)
    query = parse_query({"status": ["completed"], "method": "get", "runtime.x": "1"}, SPEC)
    assert keep({"runtime": {"x": "1"}}, query)
    assert not keep({"runtime": {"x": "2"}}, query)
    ignoring = ListSpec("projects.get_all_ex", ignored=frozenset({"include_stats"}))
    parse_query({"include_stats": True}, ignoring)


def test_hidden_documents_by_id_or_flag() -> None:
    hidden = {"id": "p", "system_tags": ["hidden"]}
    assert not keep(hidden, parse_query({}, SPEC))
    assert keep(hidden, parse_query({"id": ["p"]}, SPEC))
    assert keep(hidden, parse_query({"search_hidden": True}, SPEC))
    assert keep(hidden, parse_query({}, SPEC), show_hidden=True)


def test_page_size_over_the_cap_is_clamped() -> None:
    docs = [{"n": n} for n in range(MAX_PAGE_SIZE + 5)]
    query = parse_query({"page": 0, "page_size": 100_000}, SPEC)
    assert len(order_and_page(list(docs), query)) == MAX_PAGE_SIZE
    query = parse_query({"page": 1, "page_size": MAX_PAGE_SIZE}, SPEC)
    assert [d["n"] for d in order_and_page(list(docs), query)] == list(
        range(MAX_PAGE_SIZE, MAX_PAGE_SIZE + 5)
    )
    with pytest.raises(ApiError, match="'page_size' must be >= 0"):
        parse_query({"page_size": -1}, SPEC)


def test_exact_name_regex() -> None:
    assert exact_name(r"^a/\.pipelines/my\ pipe$")
    assert exact_name("^plain$")
    assert not exact_name("^a/.*$")
    assert not exact_name(r"^a\d$")
    assert not exact_name("plain")


def test_date_conditions_as_the_trigger_scheduler_sends_them() -> None:
    doc = {"last_update": "2026-01-02T00:00:00+00:00", "last_change": "2025-01-01T00:00:00"}
    newer = {"fields": ["last_update", "last_change"], "datetime": [">2026-01-01T12:00:00"]}
    either = parse_pattern("_or_", newer)
    assert either is not None and pattern_match(doc, either)
    both = parse_pattern("_and_", newer)
    assert both is not None and not pattern_match(doc, both)
    [bound] = parse_time_bounds("status_changed", ">2026-01-01 23:00:00.5")
    assert bound.holds("2026-01-02T00:00:00+00:00")
    assert not bound.holds("2026-01-01T00:00:00+00:00")
    assert not bound.holds(None)
    assert parse_time_bounds("x", [0])[0].holds("1970-01-01T00:00:00+00:00")  # >= by default


def test_last_metrics_ranges() -> None:
    doc = {"last_metrics": {"m": {"v": {"max_value": 0.9}}}}
    assert field_match(doc, parse_field_filter("last_metrics.m.v.max_value", [0.5, None]))
    assert not field_match(doc, parse_field_filter("last_metrics.m.v.max_value", [None, 0.5]))
    assert not field_match({}, parse_field_filter("last_metrics.m.v.max_value", [None, 0.5]))
    with pytest.raises(ApiError, match="range"):
        parse_field_filter("last_metrics.m.v.max_value", ["a", 1])
