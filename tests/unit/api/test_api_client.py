"""ApiClient against an in-memory fake server (httpx.MockTransport): retries, auth, envelopes."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from agent import __version__
from agent.api import connection
from agent.api.client import ApiClient
from agent.api.envelope import chunk_json_lines as _chunks
from agent.api.errors import (
    AlreadyQueuedError,
    ApiError,
    AuthError,
    InvalidStateError,
    NotFoundError,
    ProtocolError,
    ServerUnavailable,
)
from agent.api.models import TaskDocumentError

Handler = Callable[[httpx.Request, dict[str, Any]], httpx.Response]


def envelope(
    data: Any = None, code: int = 200, subcode: int = 0, msg: str = "OK"
) -> httpx.Response:
    meta = {"result_code": code, "result_subcode": subcode, "result_msg": msg}
    return httpx.Response(code, json={"meta": meta, "data": data if data is not None else {}})


class FakeServer:
    """Answers auth.login with a JWT and every other endpoint from ``routes``."""

    def __init__(self, token_ttl: float = 3600.0) -> None:
        self.token_ttl = token_ttl
        self.routes: dict[str, Handler] = {}
        self.requests: list[httpx.Request] = []
        self.logins = 0
        self.valid_tokens: set[str] = set()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        endpoint = request.url.path.rsplit("/", 1)[-1]
        if endpoint == "auth.login":
            self.logins += 1
            claims = {"exp": int(time.time() + self.token_ttl), "n": self.logins}
            token = jwt.encode(claims, "k" * 32, algorithm="HS256")
            self.valid_tokens.add(token)
            return envelope({"token": token})
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return envelope(code=401, subcode=20, msg="invalid token")
        is_json = request.headers.get("content-type") == "application/json"
        body = json.loads(request.content) if is_json else {}
        route = self.routes.get(endpoint)
        if route is None:
            return envelope(code=404, msg=f"unknown endpoint {endpoint}")
        return route(request, body)

    def calls(self, endpoint: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith("/" + endpoint)]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "BACKOFF_INITIAL_S", 0.01)
    monkeypatch.setattr(connection, "BACKOFF_MAX_S", 0.05)
    monkeypatch.setattr(connection, "BACKOFF_JITTER_S", 0.01)


def client(server: FakeServer, retry_for: float | None = 5.0) -> ApiClient:
    return ApiClient(
        "http://api.test/",
        "key",
        "secret",
        worker_id="box:0",
        retry_for=retry_for,
        transport=server.transport(),
    )


def ok(data: Any = None) -> Handler:
    return lambda request, body: envelope(data)


def sequence(*responses: Callable[[], httpx.Response]) -> Handler:
    """A handler answering with each response in turn (the last one repeats)."""
    queue = list(responses)

    def handle(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        return (queue.pop(0) if len(queue) > 1 else queue[0])()

    return handle


async def test_post_to_versioned_url_with_headers_and_json_body() -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = ok()
    async with client(server) as api:
        await api.ping("t1")
    login, ping = server.requests
    assert login.url.path == "/auth.login"
    assert login.headers["authorization"].startswith("Basic ")
    assert ping.method == "POST"
    assert ping.url.path == "/v2.31/tasks.ping"
    assert json.loads(ping.content) == {"task": "t1"}
    assert ping.headers["content-type"] == "application/json"
    assert ping.headers["x-clearml-worker"] == "box:0"
    assert ping.headers["x-clearml-agent"] == f"conveyor-{__version__}"
    assert ping.headers["authorization"].startswith("Bearer ")


async def test_retries_503_then_succeeds() -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = sequence(
        lambda: httpx.Response(503, text="busy"),
        lambda: envelope(code=429, msg="slow down"),
        lambda: envelope({}),
    )
    async with client(server) as api:
        await api.ping("t1")
    assert len(server.calls("tasks.ping")) == 3


async def test_a_retry_after_is_waited_for() -> None:
    server = FakeServer()
    seen: list[float] = []

    def limited(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) == 1:  # the first backoff alone is at most 0.5 s
            return httpx.Response(429, headers={"Retry-After": "0.8"}, text="slow down")
        return envelope({})

    server.routes["tasks.ping"] = limited
    async with client(server) as api:
        await api.ping("t1")
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.8


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("2", 2.0), ("0.5", 0.5), ("3600", 60.0), ("-4", 0.0), ("nan", 0.0), (None, 0.0),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", 0.0)],
)  # fmt: skip
def test_retry_after_header_values(header: str | None, seconds: float) -> None:
    assert connection.retry_after_seconds(header) == seconds


async def test_retries_connection_errors_and_timeouts() -> None:
    server = FakeServer()
    failures = [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]

    def flaky(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return envelope({})

    server.routes["tasks.ping"] = flaky
    async with client(server) as api:
        await api.ping("t1")
    assert len(server.calls("tasks.ping")) == 3


async def test_never_retries_a_4xx() -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = lambda r, b: envelope(code=400, subcode=12, msg="bad field")
    async with client(server) as api:
        with pytest.raises(ApiError) as info:
            await api.ping("t1")
    assert (info.value.code, info.value.subcode) == (400, 12)
    assert info.value.endpoint == "tasks.ping"
    assert "bad field" in str(info.value)
    assert len(server.calls("tasks.ping")) == 1


async def test_exhausted_budget_raises_server_unavailable() -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = lambda r, b: httpx.Response(502, text="bad gateway")
    async with client(server, retry_for=0.3) as api:
        started = time.monotonic()
        with pytest.raises(ServerUnavailable) as info:
            await api.ping("t1")
    assert time.monotonic() - started < 2.0
    assert len(server.calls("tasks.ping")) > 1
    assert "502" in str(info.value)
    assert isinstance(info.value, ApiError)  # callers catching ApiError see outages too


async def test_zero_budget_means_a_single_attempt() -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = lambda r, b: httpx.Response(503)
    async with client(server, retry_for=0) as api:
        with pytest.raises(ServerUnavailable):
            await api.ping("t1")
    assert len(server.calls("tasks.ping")) == 1


async def test_401_logs_in_again_once_and_repeats_the_call() -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = ok()
    async with client(server) as api:
        await api.ping("t1")
        server.valid_tokens.clear()  # the server forgot our token (restart with new secret)
        await api.ping("t1")
    assert server.logins == 2
    assert len(server.calls("tasks.ping")) == 3  # ok, 401, ok


async def test_persistent_401_is_an_auth_error_not_a_loop() -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = lambda r, b: envelope(code=401, subcode=21, msg="revoked")
    async with client(server) as api:
        with pytest.raises(AuthError):
            await api.ping("t1")
    assert server.logins == 2
    assert len(server.calls("tasks.ping")) == 2


async def test_bad_credentials_fail_at_login_without_retry() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return envelope(code=401, subcode=20, msg="invalid credentials")

    async with ApiClient("http://x", "k", "s", transport=httpx.MockTransport(refuse)) as api:
        with pytest.raises(AuthError) as info:
            await api.ping("t1")
    assert info.value.endpoint == "auth.login"


async def test_token_refreshed_when_close_to_expiry() -> None:
    near = FakeServer(token_ttl=100)  # inside the 360 s margin: every call logs in first
    near.routes["tasks.ping"] = ok()
    async with client(near) as api:
        for _ in range(3):
            await api.ping("t1")
    assert near.logins == 3

    far = FakeServer(token_ttl=3600)
    far.routes["tasks.ping"] = ok()
    async with client(far) as api:
        for _ in range(3):
            await api.ping("t1")
    assert far.logins == 1


async def test_views_share_connection_and_token() -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = ok()
    api = client(server, retry_for=1.0)
    forever = api.with_retry_for(None)
    assert forever.retry_for is None and api.retry_for == 1.0
    await api.ping("t1")
    await forever.ping("t1")
    assert server.logins == 1
    await api.aclose()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"data": {"task": {}}}),
        httpx.Response(200, text="<html>proxy</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"meta": {"result_code": 200}, "data": [1]}),
    ],
)
async def test_malformed_envelopes_are_protocol_errors(response: httpx.Response) -> None:
    server = FakeServer()
    server.routes["tasks.ping"] = lambda r, b: response
    async with client(server) as api:
        with pytest.raises(ProtocolError):
            await api.ping("t1")
    assert len(server.calls("tasks.ping")) == 1


@pytest.mark.parametrize(
    ("code", "subcode", "expected"),
    [
        (404, 0, NotFoundError),
        (400, 101, NotFoundError),
        (400, 201, NotFoundError),
        (400, 701, NotFoundError),
        (400, 110, InvalidStateError),
        (400, 706, AlreadyQueuedError),
        (400, 12, ApiError),
        (500, 0, ApiError),
    ],
)
async def test_error_mapping(code: int, subcode: int, expected: type[ApiError]) -> None:
    server = FakeServer()
    server.routes["tasks.enqueue"] = lambda r, b: envelope(code=code, subcode=subcode, msg="no")
    async with client(server) as api:
        with pytest.raises(ApiError) as info:
            await api.enqueue("t1", "q1")
    assert type(info.value) is expected
    assert len(server.calls("tasks.enqueue")) == 1  # 500 is not retried either


async def test_get_task_parses_and_rejects_malformed_documents() -> None:
    server = FakeServer()
    doc: dict[str, Any] = {
        "id": "t1",
        "name": "train",
        "script": {"repository": "https://h/r.git", "entry_point": "train.py"},
        "execution": {"queue": "q1"},
    }
    server.routes["tasks.get_by_id"] = lambda r, b: envelope({"task": doc})
    async with client(server) as api:
        spec = await api.get_task("t1")
        assert (spec.id, spec.script.entry_point, spec.queue_id) == ("t1", "train.py", "q1")
        doc["script"] = {"entry_point": 3}
        with pytest.raises(TaskDocumentError, match=r"script\.entry_point"):
            await api.get_task("t1")


async def test_task_status_and_missing_task() -> None:
    server = FakeServer()
    runtime = {"conveyor_attempt": 2}
    tasks = [
        {"id": "t1", "status": "in_progress", "status_message": "stopping", "runtime": runtime}
    ]

    def get_all(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        assert body["only_fields"] == ["status", "status_message", "runtime"]
        return envelope({"tasks": [t for t in tasks if t["id"] in body["id"]]})

    server.routes["tasks.get_all"] = get_all
    async with client(server) as api:
        assert await api.task_status("t1") == ("in_progress", "stopping")
        assert await api.task_progress("t1") == ("in_progress", "stopping", 2)
        with pytest.raises(NotFoundError, match="t2"):
            await api.task_status("t2")


async def test_get_next_task_pops_or_returns_none() -> None:
    server = FakeServer()
    server.routes["queues.get_next_task"] = sequence(
        lambda: envelope({"entry": {"task": "t9", "added": "now"}}), lambda: envelope({})
    )
    async with client(server) as api:
        assert await api.get_next_task("q") == "t9"
        assert await api.get_next_task("q") is None


async def test_queue_id_by_id_then_by_name_then_clear_error() -> None:
    server = FakeServer()
    queues = {"q1": "default", "q2": "gpu"}

    def by_id(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if body["queue"] in queues:
            return envelope({"queue": {"id": body["queue"], "name": queues[body["queue"]]}})
        return envelope(code=400, subcode=701, msg="invalid queue id")

    def get_all(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        name = body["name"].strip("^$")
        return envelope({"queues": [{"id": i, "name": n} for i, n in queues.items() if n == name]})

    server.routes["queues.get_by_id"] = by_id
    server.routes["queues.get_all"] = get_all
    async with client(server) as api:
        assert await api.queue_id("q2") == "q2"
        assert await api.queue_id("gpu") == "q2"
        with pytest.raises(NotFoundError, match="no queue named 'cpu'"):
            await api.queue_id("cpu")


async def test_default_queue_missing_has_an_actionable_message() -> None:
    server = FakeServer()
    server.routes["queues.get_default"] = lambda r, b: envelope(
        code=400, subcode=707, msg="no default queue"
    )
    async with client(server) as api:
        with pytest.raises(NotFoundError, match="system tag 'default'"):
            await api.default_queue_id()


async def test_add_events_sends_json_lines() -> None:
    server = FakeServer()
    server.routes["events.add_batch"] = ok({"added": 2, "errors": 0})
    events = [
        {"type": "log", "task": "t1", "msg": "a\nb"},
        {"type": "log", "task": "t1", "msg": "c"},
    ]
    async with client(server) as api:
        await api.add_events(events)
        await api.add_events([])  # nothing to send: no request
    (request,) = server.calls("events.add_batch")
    assert request.headers["content-type"] == "application/json-lines"
    assert [json.loads(line) for line in request.content.splitlines()] == events


async def test_add_events_reports_rejected_events() -> None:
    server = FakeServer()
    server.routes["events.add_batch"] = ok({"added": 0, "errors": 1, "errors_info": {"x": 1}})
    async with client(server) as api:
        with pytest.raises(ApiError, match="rejected"):
            await api.add_events([{"type": "log", "task": "t1"}])


def test_chunks_respect_the_size_limit_and_keep_order() -> None:
    events = [{"i": i, "pad": "x" * 100} for i in range(50)]
    bodies = _chunks(events, 1000)
    assert len(bodies) > 1
    assert all(len(b) <= 1000 for b in bodies)
    decoded = [json.loads(line) for b in bodies for line in b.splitlines()]
    assert decoded == events
    assert _chunks([{"big": "y" * 5000}], 1000) == [
        json.dumps({"big": "y" * 5000}).replace(" ", "").encode()
    ]


async def test_get_task_log_pages_backwards_and_returns_ascending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.api import client as client_module

    monkeypatch.setattr(client_module, "LOG_PAGE_SIZE", 3)
    stored = [{"timestamp": 1000 + i, "msg": str(i)} for i in range(8)]

    def get_log(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        before = body.get("from_timestamp", 10**12)
        older = [e for e in stored if e["timestamp"] < before]
        return envelope({"events": older[-body["batch_size"] :]})

    server = FakeServer()
    server.routes["events.get_task_log"] = get_log
    async with client(server) as api:
        assert [e["msg"] for e in await api.get_task_log("t1", last=5)] == list("34567")
        assert [e["msg"] for e in await api.get_task_log("t1", last=100)] == list("01234567")


async def test_get_model_is_typed() -> None:
    server = FakeServer()
    model = {
        "id": "m1",
        "name": "base",
        "uri": "file:///models/m1.pt",
        "framework": "PyTorch",
        "ready": True,
        "metadata": {"epochs": {"key": "epochs", "type": "int", "value": "3"}},
    }
    server.routes["models.get_by_id"] = ok({"model": model})
    async with client(server) as api:
        info = await api.get_model("m1")
    assert (info.id, info.uri, info.ready, dict(info.metadata)) == (
        "m1",
        "file:///models/m1.pt",
        True,
        {"epochs": "3"},
    )


async def test_create_task_omits_empty_parts_and_returns_the_id() -> None:
    server = FakeServer()
    seen: list[dict[str, Any]] = []

    def create(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        seen.append(body)
        return envelope({"id": "t42"})

    server.routes["tasks.create"] = create
    async with client(server) as api:
        task_id = await api.create_task("n", "p1", script={"entry_point": "a.py"})
    assert task_id == "t42"
    assert seen == [
        {"name": "n", "type": "training", "project": "p1", "script": {"entry_point": "a.py"}}
    ]


def test_a_plain_http_server_loads_no_ca_bundle_and_its_context_refuses_tls() -> None:
    assert connection.tls_for("https://api.example.org") is True  # httpx's default checks
    assert connection.tls_for("HTTPS://api.example.org") is True
    context = connection.tls_for("http://127.0.0.1:8008")
    assert isinstance(context, ssl.SSLContext)
    # nothing trusted, yet every check on: a handshake through it can only fail
    assert context.cert_store_stats()["x509_ca"] == 0
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
