"""Real git servers for the source stage: bare repositories, smart HTTP with Basic auth.

A plain module (not the conftest) so test modules can import it.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}
SERVER_WAIT = 10.0  # seconds for a git server to accept connections
HTTP_USER = "alice"
HTTP_TOKEN = "tok-5up3r-s3cret-9f8e7d"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_IDENTITY},
    )
    return done.stdout.strip()


def commit_all(work: Path, message: str) -> str:
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD")


def numbered(n: int, changed: dict[int, str] | None = None) -> str:
    """Lines ``line 1..n``, some replaced: a file where hunks can be placed precisely."""
    changed = changed or {}
    return "".join(f"{changed.get(i, f'line {i}')}\n" for i in range(1, n + 1))


@dataclass(frozen=True)
class Origin:
    """A bare repository with history: tag v1 → c1, main → c2 (default), feature → c3."""

    bare: Path
    work: Path  # a clone of it, left at main
    c1: str
    c2: str
    c3: str

    @property
    def url(self) -> str:
        return self.bare.as_uri()


def make_origin(root: Path, name: str = "origin.git") -> Origin:
    bare = root / name
    git(root, "init", "-q", "--bare", str(bare))
    work = root / f"{name}-work"
    git(root, "clone", "-q", str(bare), str(work))
    (work / "train.py").write_text("print('v1')\n")
    (work / "notes.txt").write_text(numbered(12))
    (work / "data.bin").write_bytes(bytes(range(256)) * 4)
    (work / "sub").mkdir()
    (work / "sub" / "tool.py").write_text("print('tool')\n")
    c1 = commit_all(work, "one")
    git(work, "tag", "v1")
    (work / "train.py").write_text("print('v2')\n")
    (work / "notes.txt").write_text(numbered(12, {4: "line 4 changed on main"}))
    c2 = commit_all(work, "two")
    git(work, "push", "-q", "origin", "HEAD:main", "--tags")
    git(work, "checkout", "-q", "-b", "feature")
    (work / "train.py").write_text("print('feature')\n")
    c3 = commit_all(work, "three")
    git(work, "push", "-q", "origin", "feature")
    git(work, "checkout", "-q", "main")
    return Origin(bare=bare, work=work, c1=c1, c2=c2, c3=c3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + SERVER_WAIT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # polling a port: there is no event to await
    raise TimeoutError(f"nothing accepted connections on 127.0.0.1:{port}")


class GitHttpHandler(BaseHTTPRequestHandler):
    """Smart HTTP through ``git http-backend`` (CGI), behind Basic auth: a private host."""

    project_root = Path()
    seen_authorization: list[str] = []

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        expected = base64.b64encode(f"{HTTP_USER}:{HTTP_TOKEN}".encode()).decode()
        got = self.headers.get("Authorization", "")
        self.seen_authorization.append(got)
        if got != f"Basic {expected}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_USER": HTTP_USER,
        }
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        del format, args  # keep test output quiet


@dataclass(frozen=True)
class HttpGit:
    base_url: str  # http://127.0.0.1:<port>/
    seen_authorization: list[str]
