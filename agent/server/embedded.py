"""The embedded control plane as a library: uvicorn in a background thread.

    with EmbeddedServer(db_path) as server:
        print(server.url, server.files_host, server.credentials)

``start`` binds the listening socket itself (so port 0 resolves at once) and returns when the
app's startup has run, so the first request is served without any sleep or retry.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path
from types import TracebackType

from agent.server.app import AppServer, create_app, server_config
from agent.server.bootstrap import open_state
from agent.server.files import files_url
from agent.server.state import DEFAULT_MAX_BODY, Credentials, ServerConfig, ServerState

__all__ = [
    "Credentials",
    "EmbeddedServer",
    "ServerRefused",
    "env_lines",
    "files_url",
    "is_loopback",
]

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class ServerRefused(RuntimeError):
    """The server will not start as configured (e.g. public address without credentials)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, credentials: Credentials | None) -> None:
    if not is_loopback(host) and credentials is None:
        raise ServerRefused(
            f"refusing to listen on non-loopback address {host!r} without explicit credentials: "
            "configure an access key and secret key (or bind 127.0.0.1)"
        )


def url_for(host: str, port: int) -> str:
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def env_lines(url: str, creds: Credentials, files_host: str = "") -> list[str]:
    """The environment a ClearML SDK user pastes to use this server; the files host defaults
    to the server's own file service (``<url>/files``)."""
    return [
        f"CLEARML_API_HOST={url}",
        f"CLEARML_WEB_HOST={url}",
        f"CLEARML_FILES_HOST={files_host or files_url(url)}",
        f"CLEARML_API_ACCESS_KEY={creds.access_key}",
        f"CLEARML_API_SECRET_KEY={creds.secret_key}",
    ]


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio only sets TCP_NODELAY on accepted sockets
    # whose proto says TCP, and without it every keep-alive response waits ~40 ms (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class EmbeddedServer:
    """A control plane on ``db_path`` serving HTTP on ``host:port`` from a daemon thread."""

    def __init__(
        self,
        db_path: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        credentials: Credentials | None = None,
        worker_timeout: float | None = None,
        watchdog_interval: float = 5.0,
        max_retries: int = 2,
        files_root: Path | None = None,
        files_quota: int | None = None,
        files_public: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        check_bind(host, credentials)
        self._host = host
        self._port = port
        self._config = ServerConfig(
            db_path=Path(db_path),
            credentials=credentials,
            worker_timeout=worker_timeout,
            watchdog_interval=watchdog_interval,
            max_retries=max_retries,
            files_root=files_root,
            files_quota=files_quota,
            files_public=files_public,
            max_body=max_body,
        )
        self._state: ServerState | None = None
        self._server: AppServer | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._ready = threading.Event()
        self._started = False
        self._error: BaseException | None = None
        self._bound_port = 0

    @property
    def url(self) -> str:
        return url_for(self._host, self.port)

    @property
    def port(self) -> int:
        if not self._bound_port:
            raise RuntimeError("server not started")
        return self._bound_port

    @property
    def files_host(self) -> str:
        """``CLEARML_FILES_HOST`` for this server: its file service, ``<url>/files``."""
        return files_url(self.url)

    @property
    def credentials(self) -> Credentials:
        return self.state.credentials

    @property
    def state(self) -> ServerState:
        """The running server's state (store, config); for tests and the coordinator."""
        if self._state is None:
            raise RuntimeError("server not started")
        return self._state

    @property
    def db_path(self) -> Path:
        return self._config.db_path

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._state = open_state(self._config)
        try:
            self._socket = bind_socket(self._host, self._port)
        except OSError:
            self._state.store.close()
            raise
        self._bound_port = int(self._socket.getsockname()[1])
        app = create_app(self._state, on_ready=self._on_ready)
        self._server = AppServer(server_config(app), self._state)
        self._thread = threading.Thread(target=self._serve, name="conveyor-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or not self._started:
            self.stop()
            raise RuntimeError(f"embedded server failed to start: {self._error!r}")

    def _on_ready(self) -> None:
        self._started = True
        self._ready.set()

    def _serve(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported to start(), which re-raises it
            self._error = exc
            raise
        finally:
            self._ready.set()  # never leave start() waiting for a thread that is gone

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
        if self._state is not None:
            self._state.store.close()
        self._thread = None
        self._server = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
