"""Pure parts of the input-model stage: checksum convention, variable names, URI display."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest

from agent.api.models import InputModelRef, ModelInfo, TaskDocumentError
from agent.pipeline.models import (
    CacheEntry,
    CacheState,
    EntryCheck,
    FetchedModel,
    FileRecord,
    ModelError,
    check_entry,
    expected_sha256,
    file_name_of,
    files_host_auth,
    human_size,
    input_model_env,
    model_env_names,
    redact,
    transport_reason,
    under_files_host,
    unreachable,
)

DIGEST = "ab" * 32


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, None),
        ({"sha256": ""}, None),
        ({"sha256": DIGEST}, DIGEST),
        ({"sha256": f" SHA256:{DIGEST.upper()} "}, DIGEST),
        ({"other": "x", "sha256": DIGEST}, DIGEST),
    ],
)
def test_expected_sha256(metadata: dict[str, str], expected: str | None) -> None:
    assert expected_sha256(metadata) == expected


@pytest.mark.parametrize("bad", ["abc", "md5:" + "a" * 32, "z" * 64, DIGEST + "00"])
def test_a_malformed_sha256_is_an_error(bad: str) -> None:
    with pytest.raises(ModelError, match="is not a sha256 hex digest"):
        expected_sha256({"sha256": bad})


def test_model_env_names_are_sanitised_and_unique() -> None:
    refs = [
        InputModelRef("base", "1"),
        InputModelRef("encoder-v2", "2"),
        InputModelRef("Base", "3"),
        InputModelRef("!!!", "4"),
    ]
    assert model_env_names(refs) == [
        "CONVEYOR_INPUT_MODEL_BASE",
        "CONVEYOR_INPUT_MODEL_ENCODER_V2",
        "CONVEYOR_INPUT_MODEL_BASE_2",
        "CONVEYOR_INPUT_MODEL_MODEL",
    ]


def test_input_model_env_names_the_first_model_the_default() -> None:
    fetched = [
        FetchedModel("a", "1", Path("/c/a.pt"), DIGEST, True),
        FetchedModel("b", "2", Path("/c/b"), DIGEST, False),
    ]
    names = ["CONVEYOR_INPUT_MODEL_A", "CONVEYOR_INPUT_MODEL_B"]
    assert input_model_env(fetched, names) == {
        "CONVEYOR_INPUT_MODEL_A": "/c/a.pt",
        "CONVEYOR_INPUT_MODEL_B": "/c/b",
        "CONVEYOR_INPUT_MODEL": "/c/a.pt",
    }
    assert input_model_env([], []) == {}


def test_redact_drops_credentials_and_query() -> None:
    assert (
        redact("https://user:pw@host:8081/p/m.pt?X-Amz-Signature=s#f") == "https://host:8081/p/m.pt"
    )
    assert redact("file:///models/m.pt") == "file:///models/m.pt"


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("file:///m/best%20model.pt", "best model.pt"),
        ("https://h/a/b/model.bin?sig=1", "model.bin"),
        ("https://h/", "model"),
        ("s3://bucket/key/../..", "model"),
    ],
)
def test_file_name_of(uri: str, name: str) -> None:
    assert file_name_of(uri) == name


def test_human_size() -> None:
    assert human_size(999) == "999 B"
    assert human_size(1_500_000) == "1.5 MB"
    assert human_size(2_000_000_000_000) == "2.0 TB"


def test_model_info_parses_system_tags_and_metadata() -> None:
    info = ModelInfo.parse(
        {
            "id": "m1",
            "uri": "https://h/m.zip",
            "system_tags": ["package", "archived"],
            "metadata": {"sha256": {"key": "sha256", "type": "str", "value": DIGEST}, "n": 3},
        }
    )
    assert info.system_tags == ("package", "archived")
    assert dict(info.metadata) == {"sha256": DIGEST, "n": "3"}
    assert ModelInfo.parse({"id": "m2"}).system_tags == ()


@pytest.mark.parametrize("bad", ["package", [1], {"package": True}])
def test_model_info_refuses_malformed_system_tags(bad: object) -> None:
    with pytest.raises(TaskDocumentError, match=r"model\.system_tags must be a list of strings"):
        ModelInfo.parse({"id": "m1", "system_tags": bad})


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    """``outer`` raised from ``inner``, as httpx wraps the socket's error."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            _wrapped(ConnectionRefusedError(111, "Connection refused"), httpx.ConnectError("x")),
            "connection refused",
        ),
        (
            _wrapped(socket.gaierror(-2, "Name or service not known"), httpx.ConnectError("x")),
            "cannot resolve host h.invalid (Name or service not known)",
        ),
        (httpx.ConnectTimeout("x"), "connection timed out"),
        (httpx.ReadTimeout("x"), "timed out"),
        (
            _wrapped(OSError(101, "Network is unreachable"), RuntimeError()),
            "network is unreachable",
        ),
        (ssl.SSLError(1, "[SSL] wrong version number"), "TLS error ("),
        (httpx.RemoteProtocolError("Server disconnected"), "Server disconnected"),
        (RuntimeError(), "RuntimeError"),
    ],
)
def test_transport_reason_names_the_underlying_cause(exc: BaseException, reason: str) -> None:
    assert transport_reason(exc, "h.invalid").startswith(reason)


def test_unreachable_redacts_the_uri() -> None:
    error = unreachable("https://k:secret@h/m.pt?X-Amz-Signature=s", "connection refused")
    assert str(error) == "https://h/m.pt unreachable: connection refused"


RECORDED = {
    "a.bin": FileRecord(100, 1, 2, "aa" * 32),
    "dir/b.bin": FileRecord(50, 3, 4, "bb" * 32),
}


def _observed(changes: dict[str, FileRecord] | None = None) -> dict[str, FileRecord]:
    """The recorded files as stat sees them (no digest), with ``changes``."""
    seen = {name: FileRecord(*record.stamp()) for name, record in RECORDED.items()}
    return {**seen, **(changes or {})}


@pytest.mark.parametrize(
    ("observed", "problem"),
    [
        ({"a.bin": FileRecord(100, 1, 2)}, "dir/b.bin is missing"),
        (_observed({"extra/x": FileRecord(1, 1, 1)}), "extra/x was added"),
        (_observed({"a.bin": FileRecord(99, 1, 2)}), "a.bin has 99 bytes, 100 recorded"),
    ],
)
def test_check_entry_refuses_missing_added_and_resized_files(
    observed: dict[str, FileRecord], problem: str
) -> None:
    assert check_entry(RECORDED, observed, full_verify_below=0) == EntryCheck(problem)


def test_check_entry_rehashes_a_small_entry_whole() -> None:
    assert check_entry(RECORDED, _observed(), full_verify_below=151) == EntryCheck(
        rehash=("a.bin", "dir/b.bin")
    )


def test_check_entry_rehashes_only_changed_files_of_a_big_entry() -> None:
    assert check_entry(RECORDED, _observed(), full_verify_below=150) == EntryCheck()
    moved_mtime = _observed({"a.bin": FileRecord(100, 9, 2)})
    assert check_entry(RECORDED, moved_mtime, full_verify_below=150).rehash == ("a.bin",)
    moved_ctime = _observed({"dir/b.bin": FileRecord(50, 3, 9)})
    assert check_entry(RECORDED, moved_ctime, full_verify_below=150).rehash == ("dir/b.bin",)


def test_check_entry_of_an_empty_package() -> None:
    assert check_entry({}, {}) == EntryCheck()


@pytest.mark.parametrize(
    ("max_bytes", "entries", "within"),
    [
        (100, [("a", 60, False), ("b", 40, False)], True),
        (100, [("a", 60, False), ("b", 41, True)], False),  # "a" should have gone
        (100, [("a", 60, True), ("b", 41, True)], True),  # over, but only for running tasks
        (0, [("a", 10**12, False)], True),  # unbounded
    ],
)
def test_cache_state_within_bound(
    max_bytes: int, entries: list[tuple[str, int, bool]], within: bool
) -> None:
    state = CacheState(max_bytes, tuple(CacheEntry(*entry) for entry in entries))
    assert state.within_bound is within
    assert state.total == sum(size for _, size, _ in entries)


def test_the_token_goes_only_to_the_configured_files_host() -> None:
    host = "http://127.0.0.1:8008/files"
    assert under_files_host("http://127.0.0.1:8008/files/p/t.1/models/w.bin", host)
    assert under_files_host("HTTP://127.0.0.1:8008/files/w.bin", host + "/")
    assert under_files_host("http://h/files/w.bin", "http://h:80/files")  # default port
    assert under_files_host("http://h:8081/w.bin", "http://h:8081")  # a bare files host
    refused = [
        "http://127.0.0.1:8009/files/w.bin",  # another port
        "http://localhost:8008/files/w.bin",  # another name (the SDK also tells them apart)
        "https://127.0.0.1:8008/files/w.bin",  # another scheme
        "http://127.0.0.1:8008/filesX/w.bin",  # not below the prefix
        "http://127.0.0.1:8008/files",  # the prefix itself is no object
        "http://127.0.0.1:8008.evil.example/files/w.bin",
        "http://user@evil.example/files/w.bin",
        "file:///files/w.bin",
        "s3://127.0.0.1:8008/files/w.bin",
    ]
    for uri in refused:
        assert not under_files_host(uri, host), uri
    assert not under_files_host("http://127.0.0.1:8008/files/w.bin", "")
    headers_for = files_host_auth(host, "tok")
    assert headers_for(host + "/w.bin") == {"Authorization": "Bearer tok"}
    assert headers_for("http://elsewhere:8008/files/w.bin") == {}
