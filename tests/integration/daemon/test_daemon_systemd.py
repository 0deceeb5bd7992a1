"""The daemon tells systemd it is ready, feeds the watchdog and says when it stops."""

from __future__ import annotations

import contextlib
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon.support import wait_for

pytestmark = pytest.mark.slow


def test_ready_watchdog_and_stopping_reach_notify_socket(
    tmp_path: Path, agent_factory: Any
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    received: list[str] = []

    def got(message: str) -> bool:
        with contextlib.suppress(TimeoutError):
            received.append(sock.recv(4096).decode())
        return any(message in m for m in received)

    try:
        agent = agent_factory(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        wait_for(lambda: got("READY=1"), 30, "READY=1")
        wait_for(lambda: got("WATCHDOG=1"), 30, "WATCHDOG=1")
        agent.signal(signal.SIGTERM)
        wait_for(lambda: got("STOPPING=1"), 30, "STOPPING=1")
        assert agent.wait(60) == 0
    finally:
        sock.close()
