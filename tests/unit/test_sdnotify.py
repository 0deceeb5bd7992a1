"""sd_notify messages reach a real AF_UNIX datagram socket; failures never raise."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.worker import sdnotify
from agent.worker.sdnotify import (
    notify_ready,
    notify_status,
    notify_stopping,
    notify_watchdog,
    watchdog_interval,
)

RECV_TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def _fresh_notifier() -> Iterator[None]:
    yield
    sdnotify._close()  # the module keeps one socket open between calls


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to ~108 bytes: pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="sdn-"))
    yield path
    shutil.rmtree(path)


def bind_receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(RECV_TIMEOUT)
    return sock


@pytest.fixture
def receiver(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = short_dir / "notify"
    sock = bind_receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_messages_arrive(receiver: socket.socket) -> None:
    notify_ready()
    notify_status("draining\n2 tasks")
    notify_watchdog()
    notify_stopping()
    got = [receiver.recv(4096) for _ in range(4)]
    assert got == [b"READY=1", b"STATUS=draining 2 tasks", b"WATCHDOG=1", b"STOPPING=1"]


def test_status_is_sent_as_utf8(receiver: socket.socket) -> None:
    notify_status("running «résumé» 训练")
    assert receiver.recv(4096).decode("utf-8") == "STATUS=running «résumé» 训练"


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"conveyor-test-{os.getpid()}"
    with bind_receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notify_ready()
        assert sock.recv(4096) == b"READY=1"


def test_no_notify_socket_is_a_silent_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with capture_logs() as logs:
        notify_ready()
        notify_status("x")
        notify_watchdog()
        notify_stopping()
    assert logs == []


# The package's constructor drops its socket unclosed when connect fails (CPython closes it at
# once, with a ResourceWarning): harmless, and not ours to fix.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreachable_socket_warns_then_recovers(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = short_dir / "notify"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    with capture_logs() as logs:
        notify_ready()  # nobody listening yet: must not raise
    assert [e["event"] for e in logs] == ["sd_notify failed"]
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["socket"] == str(path)

    with bind_receiver(str(path)) as sock:  # systemd (back) there: the next call reconnects
        notify_watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    path.unlink()

    with capture_logs() as logs:
        notify_watchdog()  # the receiver went away after a good send
    assert [e["event"] for e in logs] == ["sd_notify failed"]


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": me}) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_watchdog_interval_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 5.0
