"""Hostile or broken request bodies: refused with 400/10 or 413, never a 500, server unharmed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.server.body import MAX_DEPTH
from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, api_raw, token_for

CAP = 1024 * 1024


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A server whose API bodies are capped at 1 MiB (the default is 16 MiB)."""
    path = tmp_path_factory.mktemp("capped") / "server.db"
    with EmbeddedServer(path, max_body=CAP) as server:
        yield server


def _refused(response: Any, code: int, subcode: int | None = None) -> str:
    meta = response.json()["meta"]
    assert response.status_code == code == meta["result_code"], meta
    if subcode is not None:
        assert meta["result_subcode"] == subcode, meta
    return str(meta["result_msg"])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested"),
        ('{"name": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}", "nests more"),
        ('{"name": "x", "runtime": {"v": NaN}}', "NaN"),
        ('{"name": "x", "runtime": {"v": -Infinity}}', "Infinity"),
        ('{"name": "x", "runtime": {"v": 1e999}}', "too large"),
        ('{"name": "x", "runtime": {"v": ' + "9" * 400 + ".5}}", "too large"),
        ('{"name": "x", "runtime": {"v": ' + "9" * 5000 + "}}", "malformed"),
        ('{"name": "\\ud800x"}', "surrogate"),
        ('{"name": "x", "runtime": {"\\udfff": 1}}', "surrogate"),
    ],
)
def test_harmful_bodies_are_malformed(
    shared_server: EmbeddedServer, content: str, words: str
) -> None:
    msg = _refused(api_raw(shared_server, "tasks.create", content=content), 400, 10)
    assert words in msg
    assert api_call(shared_server, "server.info")["server"] == "conveyor"


def test_deep_json_lines_batch_is_malformed(shared_server: EmbeddedServer) -> None:
    task = api_call(shared_server, "tasks.create", {"name": "deep-lines"})["id"]
    good = f'{{"task": "{task}", "type": "log", "msg": "ok"}}'
    content = good + "\n" + "[" * 50_000 + "]" * 50_000 + "\n"
    headers = {"Content-Type": "application/json-lines"}
    response = api_raw(shared_server, "events.add_batch", content=content, headers=headers)
    assert "line 2" in _refused(response, 400, 10)
    log = api_call(shared_server, "events.get_task_log", {"task": task})
    assert log["total"] == 0  # nothing of the refused batch is stored


def test_a_valid_surrogate_pair_is_kept(shared_server: EmbeddedServer) -> None:
    content = '{"name": "pair \\ud83d\\ude00"}'  # an escaped pair: one character
    response = api_raw(shared_server, "tasks.create", content=content)
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["id"]
    doc = api_call(shared_server, "tasks.get_by_id", {"task": task_id})["task"]
    assert doc["name"] == "pair \U0001f600"


def test_body_over_the_cap_by_content_length_is_refused_unread(capped: EmbeddedServer) -> None:
    """413 answers on the headers alone: nothing of the 200 MB body is sent."""
    host, port = capped.url.removeprefix("http://").split(":")
    head = (
        f"POST /tasks.create HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token_for(capped)}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {200 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after its answer
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, answer[:300]
    assert b"connection: close" in answer.lower()
    assert b"limit of 1048576 bytes (1 MiB)" in answer, answer


def test_streamed_body_over_the_cap_is_refused(capped: EmbeddedServer) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"name": "big", "comment": "'
        for _ in range(4 * CAP // 65536):
            sent += 65536
            yield b"x" * 65536
        yield b'"}'

    try:
        response = api_raw(capped, "tasks.create", content=chunks())  # type: ignore[arg-type]
    except Exception as exc:  # the server may close before the client has sent it all
        pytest.fail(f"no answer to an oversized streamed body: {exc!r}")
    assert "limit" in _refused(response, 413)
    assert api_call(capped, "server.info")["server"] == "conveyor"
    names = [t["name"] for t in api_call(capped, "tasks.get_all", {})["tasks"]]
    assert "big" not in names


def test_body_at_the_cap_is_taken(capped: EmbeddedServer, tmp_path: Path) -> None:
    filler = "y" * (CAP - 100)
    task = api_call(capped, "tasks.create", {"name": "at-cap", "comment": filler})
    doc = api_call(capped, "tasks.get_by_id", {"task": task["id"]})["task"]
    assert len(doc["comment"]) == len(filler)


def test_a_long_poll_with_a_large_body_is_refused(shared_server: EmbeddedServer) -> None:
    """Long polls parse on the event loop: their bodies are kept small."""
    content = '{"queues": [], "timeout": 0, "pad": "' + "z" * (2 * 1024 * 1024) + '"}'
    response = api_raw(shared_server, "queues.wait_for_entries", content=content)
    assert "limit" in _refused(response, 413)


def test_integers_past_64_bits_are_refused(shared_server: EmbeddedServer) -> None:
    """SQLite stores 64-bit integers: a larger one is a 400 naming the field, not a 500."""
    task = api_call(shared_server, "tasks.create", {"name": "big-ints"})["id"]
    event = {"task": task, "type": "training_stats_scalar", "value": 1, "iter": 2**70}
    msg = _refused(api_raw(shared_server, "events.add", event), 400, 12)
    assert "'iter' is out of range" in msg
    msg = _refused(api_raw(shared_server, "tasks.get_all", {"page_size": 10**30}), 400, 12)
    assert "'page_size' is out of range" in msg
    body: dict[str, Any] = {"task": task, "scroll_id": "9" * 30}
    assert "scroll_id" in _refused(api_raw(shared_server, "events.get_task_events", body), 400)
    metrics = [{"task": task}]
    body = {"metrics": metrics, "scroll_id": f'{{"{task}": {2**64}}}'}
    assert "scroll_id" in _refused(api_raw(shared_server, "events.debug_images", body), 400)
    body = {"metrics": metrics, "scroll_id": "[" * 100_000}
    assert "scroll_id" in _refused(api_raw(shared_server, "events.debug_images", body), 400)
