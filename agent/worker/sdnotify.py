"""systemd readiness, status and watchdog notifications (``Type=notify``, ``WatchdogSec=``).

Every call is a no-op when the agent is not started by systemd (``NOTIFY_SOCKET`` unset) and
none ever raises: a notification that cannot be delivered is logged as a warning, because the
agent's work must not depend on it (systemd then restarts a silent agent, which is the point
of the watchdog, and the warning says why in the journal).

The socket is opened once per ``NOTIFY_SOCKET`` address and reused; after a failed send it is
reopened on the next call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import structlog
from sdnotify import SystemdNotifier

log = structlog.get_logger()

NOTIFY_SOCKET_VAR = "NOTIFY_SOCKET"
WATCHDOG_USEC_VAR = "WATCHDOG_USEC"
WATCHDOG_PID_VAR = "WATCHDOG_PID"
USEC_PER_SECOND = 1_000_000
# Ping at half the watchdog timeout, as sd_watchdog_enabled(3) recommends: one late ping
# (a slow event-loop turn) must not get the agent killed.
WATCHDOG_FRACTION = 0.5

_lock = threading.Lock()
_notifier: tuple[str, SystemdNotifier] | None = None  # (address, connected notifier)


def notify_ready() -> None:
    """The agent is up (registered, polling): systemd finishes ``systemctl start``."""
    _send("READY=1")


def notify_watchdog() -> None:
    """Still alive: call every ``watchdog_interval()`` seconds from the event loop."""
    _send("WATCHDOG=1")


def notify_stopping() -> None:
    """Shutdown has begun (draining); ``systemctl status`` shows "deactivating"."""
    _send("STOPPING=1")


def notify_status(text: str) -> None:
    """A one-line status for ``systemctl status`` (e.g. "running 2 tasks")."""
    _send("STATUS=" + " ".join(text.splitlines()))


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), None if no watchdog.

    Like sd_watchdog_enabled(3): ``WATCHDOG_PID``, when set, must name this process (a child
    that inherited the variables is not the one being watched).
    """
    environ = os.environ if environ is None else environ
    pid = environ.get(WATCHDOG_PID_VAR, "").strip()
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get(WATCHDOG_USEC_VAR, "").strip())
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / USEC_PER_SECOND * WATCHDOG_FRACTION


def _send(message: str) -> None:
    global _notifier
    address = os.environ.get(NOTIFY_SOCKET_VAR, "")
    if not address:
        return
    # systemd reads UTF-8; the package encodes str as latin-1, which maps code points 0-255 to
    # the same bytes, so handing it the UTF-8 bytes as a latin-1 str sends exactly those bytes.
    wire = message.encode("utf-8").decode("latin-1")
    with _lock:
        try:
            if _notifier is None or _notifier[0] != address:
                _close()
                # debug=True: raise instead of silently dropping, so failures are logged here.
                _notifier = (address, SystemdNotifier(debug=True))
            _notifier[1].notify(wire)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in NOTIFY_SOCKET
            _close()
            log.warning(
                "sd_notify failed", message=message, socket=address, error=str(exc) or repr(exc)
            )


def _close() -> None:
    global _notifier
    if _notifier is not None and _notifier[1].socket is not None:
        _notifier[1].socket.close()
    _notifier = None
