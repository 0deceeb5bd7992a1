"""Shared parts of the input-model tests: a local HTTP server with counters and misbehaviours,
and helpers that register models on the embedded server."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.api.models import TaskSpec
from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call

WAIT = 30.0
MB = 1_000_000


# --- a local HTTP server with counters and misbehaviours ------------------------------------------


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # path -> 503s before success
    stalled: threading.Event = field(default_factory=threading.Event)  # /slow began
    release: threading.Event = field(default_factory=threading.Event)  # /slow may go on
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""
    authorization: dict[str, list[str]] = field(default_factory=dict)  # path -> headers seen
    redirects: dict[str, str] = field(default_factory=dict)  # path -> where a 302 sends it

    def add(self, name: str, content: bytes) -> str:
        path = f"/{uuid.uuid4().hex[:8]}/{name}"
        self.files[path] = content
        return self.base + path


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            with served.lock:
                served.hits[path] = served.hits.get(path, 0) + 1
                seen = served.authorization.setdefault(path, [])
                seen.append(self.headers.get("Authorization", ""))
                failing = served.failures.get(path, 0)
                if failing:
                    served.failures[path] = failing - 1
            if failing:
                self.send_error(503)
                return
            if path in served.redirects:
                self.send_response(302)
                self.send_header("Location", served.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path.endswith("/slow"):
                self._slow()
                return
            body = served.files.get(path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _slow(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(4 * MB))
            self.end_headers()
            self.wfile.write(b"x" * MB)
            self.wfile.flush()
            served.stalled.set()
            served.release.wait(WAIT)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def register(
    server: EmbeddedServer, uri: str, sha256: str | None = None, package: bool = False
) -> str:
    body: dict[str, Any] = {"name": f"m-{uuid.uuid4().hex[:6]}", "uri": uri}
    if sha256:
        body["metadata"] = [{"key": "sha256", "type": "str", "value": sha256}]
    if package:
        body["system_tags"] = ["package"]
    model_id: str = api_call(server, "models.create", body)["id"]
    return model_id


def task_with(**models: str) -> TaskSpec:
    inputs = [{"name": name, "model": model_id} for name, model_id in models.items()]
    return TaskSpec.parse({"id": f"t-{uuid.uuid4().hex[:8]}", "models": {"input": inputs}})


def recorded_sha(server: EmbeddedServer, model_id: str) -> str | None:
    model = api_call(server, "models.get_by_id", {"model": model_id})["model"]
    item = model.get("metadata", {}).get("sha256")
    return None if item is None else str(item["value"])


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def local_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "src" / uuid.uuid4().hex[:6] / name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


@contextmanager
def serve_files() -> Iterator[Served]:
    """A threaded HTTP server on 127.0.0.1 serving :attr:`Served.files`."""
    served = Served()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.release.set()
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
