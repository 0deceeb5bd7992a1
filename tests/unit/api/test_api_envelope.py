"""The wire format (pure): URLs, envelopes, token expiry, error mapping."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from agent.api.envelope import endpoint_url, parse_envelope, token_expiry
from agent.api.errors import (
    AlreadyQueuedError,
    ApiError,
    AuthError,
    InvalidStateError,
    NotFoundError,
    ProtocolError,
    error_from,
)


def body(code: int = 200, subcode: int = 0, data: object = None, msg: str = "OK") -> bytes:
    meta = {"result_code": code, "result_subcode": subcode, "result_msg": msg, "extra": 1}
    return json.dumps({"meta": meta, "data": data}).encode()


def test_urls() -> None:
    assert endpoint_url("http://h:8008/", "tasks.get_all") == "http://h:8008/v2.31/tasks.get_all"
    assert endpoint_url("https://h/api", "auth.login") == "https://h/api/auth.login"


def test_envelope_data_and_accepted() -> None:
    assert parse_envelope(200, body(data={"a": 1}), "x.y") == {"a": 1}
    assert parse_envelope(200, body(data=None), "x.y") == {}
    assert parse_envelope(202, body(202, data={"b": 2}), "x.y") == {"b": 2}


def test_error_envelope_keeps_code_subcode_message_endpoint() -> None:
    with pytest.raises(InvalidStateError) as info:
        parse_envelope(400, body(400, 110, msg="invalid task status"), "tasks.started")
    error = info.value
    assert (error.code, error.subcode, error.message, error.endpoint) == (
        400,
        110,
        "invalid task status",
        "tasks.started",
    )
    assert str(error) == "tasks.started: invalid task status (400/110)"


def test_http_error_with_ok_meta_is_still_an_error() -> None:
    with pytest.raises(ApiError):
        parse_envelope(500, body(200), "x.y")


@pytest.mark.parametrize("content", [b"", b"null", b"{}", b'{"data": {}}', b"<html>", b"[1]"])
def test_not_an_envelope(content: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_envelope(200, content, "x.y")


def test_error_from_table() -> None:
    assert type(error_from(401, 0, "", "e")) is AuthError
    assert type(error_from(404, 0, "", "e")) is NotFoundError
    assert type(error_from(400, 101, "", "e")) is NotFoundError
    assert type(error_from(400, 706, "", "e")) is AlreadyQueuedError
    assert type(error_from(400, 707, "", "e")) is ApiError
    assert type(error_from(403, 0, "", "e")) is ApiError


def test_token_expiry_read_without_verification() -> None:
    exp = int(time.time()) + 100
    token = jwt.encode({"exp": exp, "api_version": "2.31"}, "s" * 32, algorithm="HS256")
    assert token_expiry(token) == exp
    assert token_expiry(jwt.encode({"x": 1}, "s" * 32, algorithm="HS256")) is None
    assert token_expiry("not-a-jwt") is None
