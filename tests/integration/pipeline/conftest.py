"""Fixtures for the source and environment stages: real git servers (see gitservers.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from gitservers import (
    SERVER_WAIT,
    GitHttpHandler,
    HttpGit,
    Origin,
    free_port,
    git,
    make_origin,
    wait_for_port,
)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    return make_origin(tmp_path_factory.mktemp("origin"))


@pytest.fixture(scope="module")
def git_daemon(origin: Origin) -> Iterator[str]:
    """``git daemon`` serving the origin's directory; yields ``git://127.0.0.1:<port>/``."""
    port = free_port()
    base = origin.bare.parent
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--export-all",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            "--reuseaddr",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # `git daemon` runs git-daemon as its child: kill the group
    )
    try:
        wait_for_port(port, proc)
        yield f"git://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=SERVER_WAIT)


@pytest.fixture(scope="module")
def http_git(origin: Origin) -> Iterator[HttpGit]:
    """The origin's directory over smart HTTP, requiring ``alice`` / ``HTTP_TOKEN``."""
    attributes = {"project_root": origin.bare.parent, "seen_authorization": []}
    handler = type("Handler", (GitHttpHandler,), attributes)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpGit(f"http://127.0.0.1:{server.server_port}/", handler.seen_authorization)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=SERVER_WAIT)


@pytest.fixture
def fresh_clone(origin: Origin, tmp_path: Path) -> Path:
    """A scratch clone of the origin for making diffs."""
    work = tmp_path / "scratch"
    git(tmp_path, "clone", "-q", str(origin.bare), str(work))
    return work
