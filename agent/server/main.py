"""``conveyor server``: run the control plane in the foreground."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from agent.config.settings import Settings
from agent.retry import DEFAULT_MAX_RETRIES
from agent.server.app import AppServer, create_app, server_config
from agent.server.bootstrap import open_state
from agent.server.embedded import bind_socket, check_bind, env_lines, url_for
from agent.server.files import files_url
from agent.server.state import DEFAULT_MAX_BODY, Credentials, ServerConfig
from agent.server.web.session import issue_login_link

DB_FILENAME = "server.db"


def default_db_path(settings: Settings | None = None) -> Path:
    return (settings or Settings()).data_dir / DB_FILENAME


def _public_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::"):
        return url_for(socket.getfqdn(), port)
    return url_for(host, port)


def serve(
    host: str,
    port: int,
    db_path: Path,
    *,
    credentials: Credentials | None = None,
    worker_timeout: float | None = None,
    max_retries: int | None = None,
    files_host: str = "",
    files_quota: int | None = None,
    files_public: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    on_ready: Callable[[str, Credentials, str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM); prints the CLEARML_* lines to paste.

    ``on_ready(url, credentials, files_host)`` runs once the socket is bound (the CLI records
    where the server is, so other ``conveyor`` commands on this machine find it).
    ``files_host`` (what is printed as ``CLEARML_FILES_HOST``) defaults to this server's own
    file service, ``<url>/files``, storing under ``<db dir>/files`` (at most ``files_quota``
    bytes; downloads without a token if ``files_public``). An API request body over
    ``max_body`` bytes is refused with 413.
    Raises ``ServerRefused`` for a non-loopback ``host`` without explicit ``credentials``.
    """
    check_bind(host, credentials)
    state = open_state(
        ServerConfig(
            db_path=Path(db_path),
            credentials=credentials,
            worker_timeout=worker_timeout,
            max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            files_quota=files_quota,
            files_public=files_public,
            max_body=max_body,
        )
    )
    sock = bind_socket(host, port)
    url = _public_url(host, int(sock.getsockname()[1]))
    print(f"Conveyor control plane listening on {url} (database {db_path})", flush=True)
    print("Set these in the environment of ClearML SDK users and agents:", flush=True)
    files_host = files_host or files_url(url)
    for line in env_lines(url, state.credentials, files_host):
        print(f"  {line}", flush=True)
    print(f"Web console: {url}/login/once/{issue_login_link(state.store)} (one-time login link)",
          flush=True)  # fmt: skip
    if on_ready is not None:
        on_ready(url, state.credentials, files_host)
    config = server_config(create_app(state))
    try:
        with _signals_end_serving():
            AppServer(config, state).run(sockets=[sock])
    finally:
        sock.close()
        state.store.close()
    print("Conveyor control plane stopped", flush=True)


@contextmanager
def _signals_end_serving() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to whatever
    handler was installed before it: this one only notes it, so ``serve`` returns normally
    (database closed, exit status 0) instead of dying by the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        received.append(signum)  # a handler only records; uvicorn did the shutdown already

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
