"""Helpers for tests that talk to a real embedded server (and the real clearml SDK)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from agent.server.embedded import EmbeddedServer

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
API_VERSION = "2.31"

SCRATCH = Path(tempfile.mkdtemp(prefix="conveyor-tests-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)
_TOKENS: dict[str, str] = {}
_CLIENTS: dict[str, httpx.Client] = {}
T = TypeVar("T")


def python_executable() -> str:
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def sdk_env(server: EmbeddedServer, **extra: str) -> dict[str, str]:
    """Environment for a subprocess using the real clearml SDK against ``server``.

    A fresh HOME and its own clearml.conf, so no user configuration or SDK cache leaks in;
    no CLEARML_*/TRAINS_* variable from the outer environment (offline mode included); the
    files host is the server's own file service (``<url>/files``).
    """
    home = Path(tempfile.mkdtemp(prefix="home-", dir=SCRATCH))
    config = home / "clearml.conf"
    # Report from a thread, not a subprocess: the subprocess reporter makes every SDK script
    # wait ~10 s at exit (an SDK-internal join); what reaches the server is the same.
    config.write_text("sdk { development { report_use_subprocess: false } }\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    creds = server.credentials
    env.update(
        HOME=str(home),
        CLEARML_CONFIG_FILE=str(config),
        CLEARML_API_HOST=server.url,
        CLEARML_WEB_HOST=server.url,
        CLEARML_FILES_HOST=server.files_host,
        CLEARML_API_ACCESS_KEY=creds.access_key,
        CLEARML_API_SECRET_KEY=creds.secret_key,
        CLEARML_NO_DEFAULT_SERVER="1",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


def run_sdk(
    code: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script (in a fresh directory) with the venv's python; asserts nothing."""
    workdir = Path(tempfile.mkdtemp(prefix="sdk-", dir=SCRATCH))
    script = workdir / "sdk_script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [python_executable(), str(script)],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def result_of(proc: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a script printed on a line starting with ``RESULT ``; fails with its output."""
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise AssertionError(
        f"script printed no RESULT (exit {proc.returncode})\n--- stdout\n{proc.stdout}"
        f"\n--- stderr\n{proc.stderr}"
    )


def client_for(server: EmbeddedServer) -> httpx.Client:
    """A keep-alive client per server (building one per call costs ~20 ms of TLS setup)."""
    if server.url not in _CLIENTS:
        _CLIENTS[server.url] = httpx.Client(timeout=60)
    return _CLIENTS[server.url]


def login(server: EmbeddedServer, **params: Any) -> str:
    creds = server.credentials
    response = client_for(server).get(
        f"{server.url}/auth.login",
        auth=(creds.access_key, creds.secret_key),
        params=params,
    )
    response.raise_for_status()
    token: str = response.json()["data"]["token"]
    return token


def token_for(server: EmbeddedServer) -> str:
    key = f"{server.url}|{server.db_path}"
    if key not in _TOKENS:
        _TOKENS[key] = login(server)
    return _TOKENS[key]


def api_raw(
    server: EmbeddedServer,
    endpoint: str,
    body: Any = None,
    *,
    token: str | None = None,
    content: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> httpx.Response:
    """One request as-is (for status/envelope assertions); ``content`` overrides ``body``."""
    all_headers = {"Authorization": f"Bearer {token or token_for(server)}", **(headers or {})}
    kwargs: dict[str, Any] = {"content": content} if content is not None else {"json": body}
    return client_for(server).request(
        method, f"{server.url}/v{API_VERSION}/{endpoint}", headers=all_headers, **kwargs
    )


def api_call(
    server: EmbeddedServer, endpoint: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Call ``endpoint`` with a token; returns ``data``, failing the test on any error envelope."""
    response = api_raw(server, endpoint, body or {})
    envelope = response.json()
    meta = envelope["meta"]
    assert response.status_code == 200 and meta["result_code"] == 200, (
        f"{endpoint} -> {response.status_code} {meta['result_subcode']}: {meta['result_msg']}"
    )
    data: dict[str, Any] = envelope["data"]
    return data


def wait_for(predicate: Callable[[], T | None], timeout: float = 30, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
