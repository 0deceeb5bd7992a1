"""The file service's pure rules: object keys, multipart field names, byte ranges."""

from __future__ import annotations

import pytest

from agent.server.files_paths import (
    STAGING_DIR,
    ByteRange,
    FilesError,
    RangeNotSatisfiable,
    field_name,
    object_key,
    parse_range,
)


@pytest.mark.parametrize(
    ("folder", "name", "key"),
    [
        (
            "",
            "/proj x/task.abc/artifacts/a/a.json",
            ("proj x", "task.abc", "artifacts", "a", "a.json"),
        ),
        ("folder/sub/", "file.bin", ("folder", "sub", "file.bin")),
        ("folder/sub", "/nested/f", ("folder", "sub", "nested", "f")),
        ("a/b.txt", "", ("a", "b.txt")),
        ("", "..hidden.v1", ("..hidden.v1",)),
        ("", "exp: lr=0.1%2F", ("exp: lr=0.1%2F",)),
        ("", "ünïcode/名前.bin", ("ünïcode", "名前.bin")),
    ],
)
def test_object_keys(folder: str, name: str, key: tuple[str, ...]) -> None:
    assert object_key(folder, name) == key


@pytest.mark.parametrize(
    ("folder", "name", "reason"),
    [
        ("", "../x", "'..'"),
        ("a/..", "x", "'..'"),
        ("", "a/./b", "'.'"),
        ("", "//etc/passwd", "empty component"),
        ("/etc", "passwd", "empty component"),
        ("", "a//b", "empty component"),
        ("", "a/", "empty component"),
        ("", "a\x00b", "NUL"),
        ("", "a\\b", "backslash"),
        ("", "C:\\Windows\\x", "backslash"),
        ("", f"{STAGING_DIR}/x.part", "reserved"),
        (STAGING_DIR, "x", "reserved"),
        ("", "n" * 256, "longer than 255"),
        ("", "/".join(["d" * 200] * 21), "longer than 4096"),
        ("", "", "no object path"),
        ("", "/", "no object path"),
    ],
)
def test_refused_object_keys(folder: str, name: str, reason: str) -> None:
    with pytest.raises(FilesError, match=reason) as caught:
        object_key(folder, name)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b'form-data; name="/p/t.1/a.json"; filename="/p/t.1/a.json"', "/p/t.1/a.json"),
        (b'form-data; filename="x;y"; name="a;b"', "a;b"),
        (b"form-data; name=plain", "plain"),
        (b'Form-Data; NAME="q%22uote%0Aline"', 'q"uote\nline'),
        ('form-data; name="名前"'.encode(), "名前"),
    ],
)
def test_field_names(header: bytes, name: str) -> None:
    assert field_name(header) == name


@pytest.mark.parametrize(
    "header",
    [b"attachment; name=x", b'form-data; filename="only"', b"", b'form-data; name="\xff"'],
)
def test_refused_field_names(header: bytes) -> None:
    with pytest.raises(FilesError):
        field_name(header)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, ByteRange(0, 10)),
        ("bytes=90-200", 100, ByteRange(90, 100)),
        ("bytes=50-", 100, ByteRange(50, 100)),
        ("bytes=-10", 100, ByteRange(90, 100)),
        ("bytes=-500", 100, ByteRange(0, 100)),
        ("bytes=0-0", 1, ByteRange(0, 1)),
        ("bytes=0-9,20-29", 100, None),  # several ranges: the whole object
        ("items=0-9", 100, None),
        ("bytes=9-0", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=5", 100, None),
    ],
)
def test_ranges(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, size)
    assert caught.value.status == 416
    assert caught.value.size == size


def test_content_range() -> None:
    assert ByteRange(10, 20).content_range(100) == "bytes 10-19/100"
    assert ByteRange(10, 20).length == 10
