"""Request parsing: body formats and typed field readers."""

from __future__ import annotations

import pytest

from agent.server.app import parse_body
from agent.server.errors import ApiError
from agent.server.fields import opt_bool, opt_float, opt_int, opt_str_list, req_str
from agent.server.listing import ListQuery, order_and_page


def test_parse_json_object_and_empty() -> None:
    assert parse_body(b'{"a": 1}', "application/json", "tasks.create") == ({"a": 1}, ())
    assert parse_body(b"  ", "", "tasks.create") == ({}, ())


def test_parse_json_lines_for_add_batch() -> None:
    body, lines = parse_body(b'{"a": 1}\n{"b": 2}\n', "application/json-lines", "events.add_batch")
    assert body == {} and lines == ({"a": 1}, {"b": 2})
    body, lines = parse_body(b'{"a": 1}', "application/json-lines", "events.add_batch")
    assert lines == ({"a": 1},)
    body, lines = parse_body(b'{"requests": []}', "application/json", "events.add_batch")
    assert body == {"requests": []}
    for content_type in ("application/json", "application/json-lines"):
        body, lines = parse_body(b'[{"a": 1}]', content_type, "events.add_batch")
        assert lines == ({"a": 1},)


@pytest.mark.parametrize(
    ("raw", "endpoint", "words"),
    [
        (b"{", "tasks.create", "malformed JSON"),
        (b"[1]", "tasks.create", "must be a JSON object"),
        (b"\xff", "tasks.create", "not UTF-8"),
        (b'{"a": 1}\nnope', "events.add_batch", "line 2"),
    ],
)
def test_parse_errors(raw: bytes, endpoint: str, words: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_body(raw, "application/json-lines", endpoint)
    assert words in info.value.msg
    assert (info.value.code, info.value.subcode) == (400, 10)


def test_field_readers() -> None:
    body = {"s": "x", "i": "42", "f": 1, "b": "true", "l": "one", "n": None}
    assert req_str(body, "s") == "x"
    assert opt_int(body, "i") == 42
    assert opt_float(body, "f") == 1.0
    assert opt_bool(body, "b") is True
    assert opt_str_list(body, "l") == ["one"]
    assert opt_int(body, "n", 7) == 7
    for reader, value in ((opt_int, True), (opt_int, "x"), (opt_bool, 2), (opt_str_list, [1])):
        with pytest.raises(ApiError):
            reader({"v": value}, "v")
    with pytest.raises(ApiError, match="'s' is required"):
        req_str({}, "s")


def test_order_and_page() -> None:
    docs = [{"n": 2, "s": {"x": "b"}}, {"n": 1, "s": {"x": "a"}}, {"n": 3, "s": {"x": "c"}}]
    query = ListQuery(None, None, [], [], None, ["-s.x"], 0, 2, False)
    assert [d["n"] for d in order_and_page(list(docs), query)] == [3, 2]
    query = ListQuery(None, None, [], [], None, ["n"], 1, 2, False)
    assert [d["n"] for d in order_and_page(list(docs), query)] == [3]
