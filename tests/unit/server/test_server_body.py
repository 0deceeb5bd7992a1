"""Body parsing refuses what no handler could store; large bodies take turns."""

from __future__ import annotations

import threading

import pytest

from agent.server import body
from agent.server.errors import ApiError


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"a": ' + b"[" * 150 + b"]" * 150 + b"}",
        b'{"a": NaN}',
        b'{"a": 1e400}',
        b'{"a": "\\udc00"}',
        b'{"a": ' + b"1" * 5000 + b"}",
    ],
)
def test_harmful_json_is_malformed(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        body.parse_body(raw, "application/json", "tasks.create")
    assert (caught.value.code, caught.value.subcode) == (400, 10)


def test_just_under_the_depth_limit_and_small_exponents_pass() -> None:
    depth = body.MAX_DEPTH - 1
    raw = b'{"a": ' + b"[" * depth + b"]" * depth + b', "b": 1e-300, "c": 1.5e3}'
    parsed, _ = body.parse_body(raw, "application/json", "tasks.create")
    assert parsed["c"] == 1500.0


def test_large_bodies_take_turns() -> None:
    inside = threading.Semaphore(0)
    release = threading.Event()
    entered: list[int] = []

    def hold(n: int) -> None:
        with body.large_body_slot(body.LARGE_BODY + 1):
            entered.append(n)
            inside.release()
            release.wait(10)

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(body.LARGE_SLOTS + 1)]
    for thread in threads:
        thread.start()
    for _ in range(body.LARGE_SLOTS):
        assert inside.acquire(timeout=10)
    assert not inside.acquire(timeout=0.3)  # the extra one waits for a slot
    assert len(entered) == body.LARGE_SLOTS
    with body.large_body_slot(10):  # a small body never waits
        pass
    release.set()
    assert inside.acquire(timeout=10)
    for thread in threads:
        thread.join(10)
    assert len(entered) == body.LARGE_SLOTS + 1
