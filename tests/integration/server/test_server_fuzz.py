"""Property-based fuzz of every endpoint: no request answers 5xx, the server stays up, bounded.

Bodies come from the server's own field definitions: each service module's calls to the typed
readers of ``agent/server/fields.py`` (``req_str(call.body, "task")``, ``opt_int(..., "iters")``,
...) and its ``body.get("...")`` reads are found in its source, so a new field is fuzzed without
editing this file. Values are of the declared type (real ids of live objects for strings, often),
of a wrong type, or random JSON; some bodies are random bytes. The server runs in its own
process (``serve``) so its memory is measured alone. The CI variant is derandomized and short;
the long one runs with ``CONVEYOR_FUZZ_LONG=1 pytest -m fuzz_long``.
"""

from __future__ import annotations

import ast
import inspect
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.server import registry
from agent.server.app import create_app  # noqa: F401 (registers every endpoint)
from tests.helpers import python_executable

pytestmark = pytest.mark.slow

SERVE = (
    "import sys; from pathlib import Path; from agent.server.main import serve; "
    "serve('127.0.0.1', 0, Path(sys.argv[1]))"
)
READERS = {
    "req_str": "str", "opt_str": "str", "opt_bool": "bool", "opt_int": "int",
    "opt_float": "float", "opt_str_list": "str_list", "opt_dict": "dict", "opt_list": "list",
}  # fmt: skip
MEMORY_GROWTH_LIMIT = 300 * 1024 * 1024
LONG = os.environ.get("CONVEYOR_FUZZ_LONG") == "1"


def _declared(module: Any) -> dict[str, str]:
    """{field: kind} a service module reads from request bodies, from its source."""
    fields: dict[str, str] = {}
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if not isinstance(node, ast.Call) or len(node.args) < 2:
            continue
        name = node.args[1]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in READERS:
            fields[name.value] = READERS[func.id]
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            fields.setdefault(node.args[0].value, "any")
    return fields


def _endpoint_fields() -> dict[str, dict[str, str]]:
    """The fields each endpoint's module reads; a write endpoint's are those it declares
    (``accepts``: anything else is refused before its handler runs)."""
    modules: dict[str, dict[str, str]] = {}
    out = {}
    for name, endpoint in registry.endpoints().items():
        handler = endpoint.waiting or endpoint.handler
        module = inspect.getmodule(handler)
        assert module is not None
        if module.__name__ not in modules:
            modules[module.__name__] = _declared(module)
        read = modules[module.__name__]
        if endpoint.accepts is not None:
            read = {f: read.get(f, "any") for f in endpoint.accepts.known() - {"method"}}
        out[name] = read
    return out


FIELDS = _endpoint_fields()
NAMES = sorted(FIELDS)
# Helpers in other modules (listing, documents) read fields too: any endpoint may get them.
EVERY_FIELD = {field: kind for fields in FIELDS.values() for field, kind in fields.items()}
for _module in ("agent.server.listing", "agent.server.documents"):
    EVERY_FIELD.update(_declared(__import__(_module, fromlist=["_"])))


@dataclass
class Live:
    url: str
    token: str
    ids: list[str]
    process: subprocess.Popen[str]
    client: httpx.Client


def _json() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
    )
    return st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids),
        max_leaves=12,
    )


def _value(kind: str, ids: list[str]) -> st.SearchStrategy[Any]:
    typed = {
        "str": st.sampled_from(ids) | st.text(max_size=20),
        "bool": st.booleans() | st.sampled_from(["true", "no", "maybe"]),
        "int": st.integers(-(2**40), 2**40)
        | st.integers()
        | st.sampled_from([0, -1, 10**6, 2**63, -(2**63) - 1, 10**30, 1e300, "7", "x"]),
        "float": st.floats(allow_nan=False, allow_infinity=False) | st.just("1.5"),
        "str_list": st.lists(st.sampled_from(ids) | st.text(max_size=10), max_size=4),
        "dict": st.dictionaries(st.text(max_size=10), _json(), max_size=4),
        "list": st.lists(_json(), max_size=4),
        "any": _json(),
    }[kind]
    return typed | typed | _json()  # the declared type twice as often as junk


@st.composite
def _requests(draw: st.DrawFn, ids: list[str]) -> tuple[str, bytes | dict[str, Any]]:
    name = draw(st.sampled_from(NAMES))
    if draw(st.integers(0, 9)) == 0:
        return name, draw(st.binary(max_size=200))
    fields = FIELDS[name]
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True)) if fields else []
    kinds = {**EVERY_FIELD, **fields}
    body = {field: draw(_value(kinds[field], ids)) for field in chosen}
    if draw(st.integers(0, 3)) == 0:  # a field it does not take: refused (writes) or ignored
        extra = draw(st.lists(st.sampled_from(sorted(EVERY_FIELD)), max_size=2))
        body.update({field: draw(_value(EVERY_FIELD[field], ids)) for field in extra})
        body.update(draw(st.dictionaries(st.text(max_size=8), _json(), max_size=2)))
    if name == "queues.wait_for_entries":
        body["timeout"] = 0  # a long poll answers at once: the fuzz must not wait
    return name, body


def _start(db: Path) -> Live:
    process = subprocess.Popen(
        [python_executable(), "-c", SERVE, str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines = [process.stdout.readline().strip() for _ in range(7)]
    env = dict(line.split("=", 1) for line in lines if line.startswith("CLEARML_"))
    url = env["CLEARML_API_HOST"]
    creds = (env["CLEARML_API_ACCESS_KEY"], env["CLEARML_API_SECRET_KEY"])
    token = httpx.get(f"{url}/auth.login", auth=creds, timeout=30).json()["data"]["token"]
    return Live(url, token, [], process, httpx.Client(timeout=60))


def _call(live: Live, name: str, body: bytes | dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {live.token}", "X-ClearML-Worker": "fuzz-worker"}
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    return live.client.post(f"{live.url}/{name}", headers=headers, **kwargs)


def _seed(live: Live) -> None:
    """Live objects whose ids the fuzz uses: a project, queues, tasks, a model, a worker."""

    def data(name: str, body: dict[str, Any]) -> dict[str, Any]:
        response = _call(live, name, body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["data"]
        return result

    live.ids.append(data("projects.create", {"name": "fuzz"})["id"])
    queue = data("queues.create", {"name": "fuzz-q"})["id"]
    live.ids += [queue, "fuzz-q", "fuzz-worker"]
    data("workers.register", {"worker": "fuzz-worker", "queues": [queue]})
    for n in range(4):
        task = data("tasks.create", {"name": f"t{n}", "type": "training"})["id"]
        live.ids.append(task)
        if n % 2:
            data("tasks.enqueue", {"task": task, "queue": queue})
    live.ids.append(data("models.create", {"name": "m", "uri": "file:///tmp/m.bin"})["id"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = _start(tmp_path_factory.mktemp("fuzz") / "server.db")
    try:
        _seed(server)
        yield server
    finally:
        server.client.close()
        server.process.send_signal(signal.SIGTERM)
        server.process.communicate(timeout=30)


def _fuzz(live: Live, examples: int) -> None:
    rss = psutil.Process(live.process.pid)
    before = rss.memory_info().rss

    @settings(
        max_examples=examples,
        derandomize=not LONG,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=_requests(live.ids))
    def one(request: tuple[str, bytes | dict[str, Any]]) -> None:
        name, body = request
        response = _call(live, name, body)
        assert response.status_code < 500, (name, body, response.text[:500])
        assert response.json()["meta"]["result_code"] == response.status_code

    one()
    assert live.process.poll() is None, "the server died"
    assert _call(live, "server.info", {}).status_code == 200
    growth = rss.memory_info().rss - before
    assert growth < MEMORY_GROWTH_LIMIT, f"server RSS grew {growth >> 20} MiB"


def test_fields_are_found_for_the_endpoints_that_read_them() -> None:
    assert FIELDS["tasks.enqueue"]["task"] == "str"
    assert "verify_watched_queue" in FIELDS["tasks.enqueue"]  # declared, not read
    assert "bogus" not in FIELDS["tasks.create"]
    assert FIELDS["events.debug_images"]["iters"] == "int"
    assert FIELDS["tasks.clone"]["new_task_project"] == "str"
    assert EVERY_FIELD["only_fields"] == "str_list"


def test_no_endpoint_answers_5xx(live: Live) -> None:
    _fuzz(live, 200)


@pytest.mark.fuzz_long
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not LONG, reason="the long fuzz runs by hand: CONVEYOR_FUZZ_LONG=1")
def test_no_endpoint_answers_5xx_long(live: Live) -> None:
    _fuzz(live, 20_000)
