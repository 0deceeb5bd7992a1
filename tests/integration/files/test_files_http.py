"""The file service over real HTTP (httpx and raw sockets) against a real embedded server:
uploads as the SDK sends them, downloads with ranges, deletes, auth, quota, and every path
trick refused without a byte written outside the storage root."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.server.embedded import EmbeddedServer
from agent.server.files import FEED_BYTES
from agent.server.files_paths import STAGING_DIR
from tests.helpers import token_for, wait_for

QUOTA = 1_000_000


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<base>/server.db, <base>/store/root (the storage root), <base>/outside (a victim)."""
    base = tmp_path_factory.mktemp("files-http")
    (base / "outside").mkdir()
    return base


@pytest.fixture(scope="module")
def server(layout: Path) -> Iterator[EmbeddedServer]:
    root = layout / "store" / "root"
    with EmbeddedServer(layout / "server.db", files_root=root, files_quota=QUOTA) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: EmbeddedServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token_for(server)}"}
    with httpx.Client(base_url=server.files_host, headers=headers, timeout=30) as c:
        yield c


def _root(server: EmbeddedServer) -> Path:
    return server.state.config.files_dir


def _upload(client: httpx.Client, name: str, data: bytes, url: str = "") -> httpx.Response:
    return client.post(url, files={name: (name, data, "application/octet-stream")})


def test_sdk_form_upload_then_download_head_and_delete(
    server: EmbeddedServer, client: httpx.Client
) -> None:
    data = os.urandom(200_000)
    name = "/proj x/task.1/artifacts/w/w.bin"  # what the SDK posts to the files host itself
    response = _upload(client, name, data)
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": [{"path": name[1:], "size": len(data)}]}
    assert (_root(server) / name[1:]).read_bytes() == data

    got = client.get("/proj%20x/task.1/artifacts/w/w.bin")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["accept-ranges"] == "bytes"
    head = client.head("/proj%20x/task.1/artifacts/w/w.bin")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    assert head.content == b""

    assert client.delete("/proj%20x/task.1/artifacts/w/w.bin").status_code == 200
    assert client.get("/proj%20x/task.1/artifacts/w/w.bin").status_code == 404
    assert not (_root(server) / "proj x").exists()  # emptied folders pruned
    assert client.delete("/proj%20x/task.1/artifacts/w/w.bin").status_code == 404


def test_folder_form_multiple_parts_and_overwrite(
    server: EmbeddedServer, client: httpx.Client
) -> None:
    files = {"a.txt": ("a.txt", b"A1"), "sub/b.txt": ("b.txt", b"B")}
    response = client.post("/folder/x/", files=files)
    assert response.status_code == 200, response.text
    assert sorted(item["path"] for item in response.json()["stored"]) == [
        "folder/x/a.txt",
        "folder/x/sub/b.txt",
    ]
    assert _upload(client, "a.txt", b"A2, longer", url="/folder/x/").status_code == 200
    assert client.get("/folder/x/a.txt").content == b"A2, longer"
    assert client.get("/folder/x/sub/b.txt").content == b"B"


def test_ranges(client: httpx.Client) -> None:
    data = bytes(range(256)) * 40
    assert _upload(client, "ranges/r.bin", data).status_code == 200
    part = client.get("/ranges/r.bin", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert client.get("/ranges/r.bin", headers={"Range": "bytes=-10"}).content == data[-10:]
    tail = client.get("/ranges/r.bin", headers={"Range": "bytes=10000-"})
    assert (tail.status_code, tail.content) == (206, data[10000:])
    beyond = client.get("/ranges/r.bin", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    stale = client.get("/ranges/r.bin", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert (stale.status_code, stale.content) == (200, data)
    etag = part.headers["etag"]
    fresh = client.get("/ranges/r.bin", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert (fresh.status_code, fresh.content) == (206, data[:10])


def test_tokens(server: EmbeddedServer, client: httpx.Client) -> None:
    assert _upload(client, "auth/f.txt", b"secret").status_code == 200
    anonymous = httpx.Client(base_url=server.files_host, timeout=30)
    assert anonymous.get("/auth/f.txt").status_code == 401
    assert anonymous.delete("/auth/f.txt").status_code == 401
    refused = anonymous.post("", files={"auth/g.txt": ("g", b"g")})
    assert refused.status_code == 401
    bad = anonymous.get("/auth/f.txt", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    creds = server.credentials
    basic = anonymous.get("/auth/f.txt", auth=(creds.access_key, creds.secret_key))
    assert basic.content == b"secret"
    assert not (_root(server) / "auth" / "g.txt").exists()


def test_public_downloads_still_need_a_token_to_upload(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path / "server.db", files_public=True) as srv:
        authed = {"Authorization": f"Bearer {token_for(srv)}"}
        assert httpx.post(srv.files_host, files={"p.txt": ("p", b"P")}, headers=authed).is_success
        assert httpx.get(f"{srv.files_host}/p.txt").content == b"P"
        assert httpx.post(srv.files_host, files={"q.txt": ("q", b"Q")}).status_code == 401
        assert httpx.delete(f"{srv.files_host}/p.txt").status_code == 401


def test_quota_refuses_clearly_and_keeps_nothing(
    server: EmbeddedServer, client: httpx.Client
) -> None:
    store = _root(server)
    free = QUOTA - _stored_bytes(store)
    response = _upload(client, "big/too-big.bin", b"x" * (free + 1))
    assert response.status_code == 413
    assert "quota" in response.text
    assert not (store / "big").exists()
    assert list((store / STAGING_DIR).iterdir()) == []
    # the refused upload's bytes were given back: exactly the free space still fits ...
    assert _upload(client, "big/fits.bin", b"y" * free).status_code == 200
    assert _upload(client, "big/one-more.bin", b"z").status_code == 413
    # ... a delete frees space again ...
    assert client.delete("/big/fits.bin").status_code == 200
    assert _upload(client, "big/fits.bin", b"y" * free).status_code == 200
    assert client.delete("/big/fits.bin").status_code == 200
    # ... and an overwrite counts both copies while in transit, then only the new one
    half = free // 2
    assert _upload(client, "big/a.bin", b"a" * half).status_code == 200
    assert _upload(client, "big/a.bin", b"A" * half).status_code == 200
    assert _upload(client, "big/b.bin", b"b" * half).status_code == 200
    for name in ("a.bin", "b.bin"):
        assert client.delete(f"/big/{name}").status_code == 200


def _stored_bytes(root: Path) -> int:
    return sum(
        p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and STAGING_DIR not in p.relative_to(root).parts
    )


def test_conflicts_between_files_and_folders(client: httpx.Client) -> None:
    assert _upload(client, "c/leaf", b"file").status_code == 200
    under_a_file = _upload(client, "c/leaf/child", b"x")
    assert under_a_file.status_code == 409
    over_a_folder = _upload(client, "c", b"x")
    assert over_a_folder.status_code == 409
    assert client.get("/c/leaf").content == b"file"
    assert client.get("/c").status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "../escape.txt",
        "a/../../escape.txt",
        "//escape.txt",
        "a//b.txt",
        "./a.txt",
        "a\\..\\escape.txt",
        "nul\x00.txt",
        f"{STAGING_DIR}/x.part",
        "x" * 300,
    ],
)
def test_hostile_field_names_are_refused(
    server: EmbeddedServer, client: httpx.Client, layout: Path, name: str
) -> None:
    # built by hand: clients would percent-encode a NUL in the name
    body = (
        b'--B\r\nContent-Disposition: form-data; name="' + name.encode() + b'"; filename="f"'
        b"\r\n\r\nevil\r\n--B--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=B"}
    response = client.post("", content=body, headers=headers)
    assert response.status_code == 400, response.text
    _assert_nothing_escaped(server, layout)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/files/../escape.txt",
        "/files/%2e%2e/escape.txt",
        "/files/a/%2E%2E/%2E%2E/escape.txt",
        "/files//escape.txt",
        "/files/a%00b",
        "/files/a%5C..%5Cescape.txt",
    ],
)
def test_hostile_url_paths_are_refused(server: EmbeddedServer, layout: Path, raw_path: str) -> None:
    for method in ("GET", "DELETE", "POST"):
        status = _raw_request(server, method, raw_path)
        assert status in (400, 404), (method, raw_path, status)
    _assert_nothing_escaped(server, layout)


def test_symlinks_inside_the_root_are_not_followed(
    server: EmbeddedServer, client: httpx.Client, layout: Path
) -> None:
    outside = layout / "outside"
    (outside / "secret.txt").write_text("outside secret")
    root = _root(server)
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file-link").symlink_to(outside / "secret.txt")
    try:
        assert _upload(client, "link/planted.txt", b"evil").status_code == 400
        assert _upload(client, "file-link", b"evil").status_code == 400
        assert client.get("/link/secret.txt").status_code == 400
        assert client.get("/file-link").status_code == 400
        assert client.delete("/link/secret.txt").status_code == 400
        assert (outside / "secret.txt").read_text() == "outside secret"
        _assert_nothing_escaped(server, layout, allowed={"secret.txt"})
    finally:
        (root / "link").unlink()
        (root / "file-link").unlink()
        (outside / "secret.txt").unlink()


def test_malformed_and_truncated_uploads_store_nothing(
    server: EmbeddedServer, client: httpx.Client
) -> None:
    store = _root(server)
    not_multipart = client.post("/m/x.bin", content=b"raw bytes")
    assert not_multipart.status_code == 400
    assert "multipart" in not_multipart.text
    truncated = (
        b'--BOUND\r\nContent-Disposition: form-data; name="m/t.bin"; filename="t"\r\n\r\nhalf of it'
    )
    headers = {"Content-Type": "multipart/form-data; boundary=BOUND"}
    response = client.post("", content=truncated, headers=headers)
    assert response.status_code == 400
    assert "incomplete" in response.text
    assert not (store / "m").exists()
    assert list((store / STAGING_DIR).iterdir()) == []


def test_client_gone_mid_upload_leaves_no_object(embedded_server: EmbeddedServer) -> None:
    server = embedded_server  # no quota: what is sent is written before the client goes
    sent = FEED_BYTES + 1_000_000  # more than one buffer: a staging file exists
    host, port = server.url.removeprefix("http://").split(":")
    part_head = (
        b'--BOUND\r\nContent-Disposition: form-data; name="gone/g.bin"; filename="g"\r\n\r\n'
    )
    head = (
        f"POST /files HTTP/1.1\r\nHost: {host}\r\nContent-Length: {2 * sent}\r\n"
        f"Authorization: Bearer {token_for(server)}\r\n"
        "Content-Type: multipart/form-data; boundary=BOUND\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + part_head + b"z" * sent)
        staging = _root(server) / STAGING_DIR
        wait_for(lambda: any(staging.iterdir()), timeout=30)
    wait_for(lambda: not any(staging.iterdir()), timeout=30)
    assert not (_root(server) / "gone").exists()


def _raw_request(server: EmbeddedServer, method: str, raw_path: str) -> int:
    """A request with the path exactly as given (clients normalise '..' away)."""
    host, port = server.url.removeprefix("http://").split(":")
    body = b'--B\r\nContent-Disposition: form-data; name="f"\r\n\r\nevil\r\n--B--\r\n'
    request = (
        f"{method} {raw_path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Authorization: Bearer {token_for(server)}\r\n"
        f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def _assert_nothing_escaped(
    server: EmbeddedServer, layout: Path, allowed: set[str] | None = None
) -> None:
    root = _root(server)
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]
    assert {p.name for p in (layout / "outside").iterdir()} == (allowed or set())
    assert not list(layout.rglob("escape.txt"))
    assert not list(root.rglob("*evil*"))
    assert list((root / STAGING_DIR).iterdir()) == []
