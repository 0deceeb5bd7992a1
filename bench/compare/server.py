"""The embedded server for the comparison, with a request recorder in front of it.

The harness runs ``agent.server.embedded.EmbeddedServer`` in its own process and wraps the ASGI
app it builds in :class:`Recorder`: every request is counted (endpoint, which client, when), and
requests that fail (HTTP status other than 200) are kept with their bodies, so a compatibility
problem with clearml-agent is reported as "this request, this answer". Nothing in ``agent/`` is
changed: the wrapper is installed by swapping the ``create_app`` the embedded server calls.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.server import embedded
from agent.server.embedded import EmbeddedServer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

HARNESS_HEADER = "x-conveyor-bench"  # the harness's own requests carry it: not counted
KEEP_BODY = 4000  # characters of a failing request/response kept for the report
MAX_FAILURES = 200
# Status calls whose task id is noted (when an agent claimed a task, when it ended it).
TRACKED = frozenset(
    {"tasks.started", "tasks.completed", "tasks.stopped", "tasks.failed", "tasks.dequeue"}
)
_ENDPOINT = re.compile(r"([a-z_]+\.[a-z_]+)/?$")


@dataclass(frozen=True)
class Hit:
    at: float  # time.time() when the request arrived
    endpoint: str
    client: str  # "conveyor", "clearml-agent", "sdk" or "other"
    path: str
    worker: str  # the X-ClearML-Worker header


@dataclass(frozen=True)
class StatusCall:
    at: float
    endpoint: str
    client: str
    task: str


@dataclass(frozen=True)
class Body:
    """A whole request body kept while capturing (``Recorder.capture``), with its arrival."""

    at: float
    client: str
    content: bytes


@dataclass(frozen=True)
class Failure:
    at: float
    client: str
    method: str
    path: str
    status: int
    request: str
    response: str


@dataclass
class Recorder:
    """ASGI middleware: counts requests, keeps failing ones (request and response bodies)."""

    app: App | None = None
    hits: list[Hit] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    status_calls: list[StatusCall] = field(default_factory=list)
    capture: frozenset[str] = frozenset()  # endpoints whose bodies are kept whole
    bodies: list[Body] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope["headers"]}
        if HARNESS_HEADER in headers:
            await self.app(scope, receive, send)
            return
        arrived = time.time()
        path = scope["path"]
        match = _ENDPOINT.search(path)
        client = client_kind(headers)
        name = match.group(1) if match else path
        with self.lock:
            worker = headers.get("x-clearml-worker", "")
            self.hits.append(Hit(arrived, name, client, path, worker))
        whole = name in self.capture or name in TRACKED
        request_body = bytearray()
        response: dict[str, Any] = {"status": 0, "body": bytearray()}

        async def recv() -> Message:
            message = await receive()
            if message["type"] == "http.request" and (whole or len(request_body) < KEEP_BODY):
                request_body.extend(message.get("body", b""))
            return message

        async def snd(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
            elif message["type"] == "http.response.body" and len(response["body"]) < KEEP_BODY:
                response["body"].extend(message.get("body", b"")[:KEEP_BODY])
            await send(message)

        await self.app(scope, recv, snd)
        if response["status"] != 200:
            self._failed(arrived, client, scope, response, request_body)
        elif name in TRACKED:
            self._status(arrived, name, client, bytes(request_body))
        if name in self.capture:
            with self.lock:
                self.bodies.append(Body(arrived, client, bytes(request_body)))

    def _status(self, arrived: float, name: str, client: str, raw: bytes) -> None:
        try:
            task = str(json.loads(raw or b"{}").get("task", ""))
        except (ValueError, AttributeError):
            return  # not a JSON object: the server answered it, nothing to note here
        with self.lock:
            self.status_calls.append(StatusCall(arrived, name, client, task))

    def first_status(self, endpoint: str, task: str) -> float | None:
        with self.lock:
            times = [c.at for c in self.status_calls if c.endpoint == endpoint and c.task == task]
        return min(times) if times else None

    def _failed(
        self,
        arrived: float,
        client: str,
        scope: Scope,
        response: dict[str, Any],
        request_body: bytearray,
    ) -> None:
        failure = Failure(
            at=arrived,
            client=client,
            method=scope["method"],
            path=scope["path"]
            + (f"?{scope['query_string'].decode()}" if scope["query_string"] else ""),
            status=int(response["status"]),
            request=request_body.decode(errors="replace")[:KEEP_BODY],
            response=bytes(response["body"]).decode(errors="replace")[:KEEP_BODY],
        )
        with self.lock:
            if len(self.failures) < MAX_FAILURES:
                self.failures.append(failure)

    def count(self, client: str, since: float, until: float) -> Counter[str]:
        with self.lock:
            return Counter(
                h.endpoint for h in self.hits if h.client == client and since <= h.at < until
            )

    def failures_since(self, since: float) -> list[Failure]:
        with self.lock:
            return [f for f in self.failures if f.at >= since]


def client_kind(headers: dict[str, str]) -> str:
    agent = headers.get("x-clearml-agent", "")
    if agent.startswith("conveyor"):
        return "conveyor"
    if agent:
        return "clearml-agent"
    if headers.get("x-clearml-client"):
        return "sdk"
    return "other"


class BenchServer(EmbeddedServer):
    """An embedded server whose app is wrapped in a :class:`Recorder`."""

    def __init__(self, db_path: Path, **kwargs: Any) -> None:
        super().__init__(db_path, **kwargs)
        self.recorder = Recorder()

    def start(self) -> None:
        original = getattr(embedded, "create_app")  # noqa: B009 (not re-exported: mypy)

        def wrapped(*args: Any, **kwargs: Any) -> App:
            self.recorder.app = original(*args, **kwargs)
            return self.recorder

        setattr(embedded, "create_app", wrapped)  # noqa: B010
        try:
            super().start()
        finally:
            setattr(embedded, "create_app", original)  # noqa: B010

    def __enter__(self) -> BenchServer:
        self.start()
        return self


class Api:
    """The harness's own client (marked, so the recorder does not count it)."""

    def __init__(self, server: EmbeddedServer) -> None:
        creds = server.credentials
        self.base = server.url
        self.http = httpx.Client(headers={HARNESS_HEADER: "1"}, timeout=120)
        token = self.http.get(
            f"{self.base}/auth.login", auth=(creds.access_key, creds.secret_key)
        ).json()["data"]["token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.base}/v2.31/{endpoint}", content=json.dumps(body))
        envelope = response.json()
        if envelope["meta"]["result_code"] != 200:
            raise RuntimeError(f"{endpoint}: {envelope['meta']['result_msg']}")
        data: dict[str, Any] = envelope["data"]
        return data

    def close(self) -> None:
        self.http.close()
