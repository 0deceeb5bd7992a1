"""clearml-agent 3.0.3 (the real one, from PyPI) runs tasks from our embedded server.

The agent runs as ``clearml-agent daemon --foreground`` in venv mode with a generated
clearml.conf (bench/compare/agents.py), its virtualenv cached under ~/.cache/conveyor-bench
across runs. Skipped, with the reason, when that virtualenv cannot be created (no PyPI).
Every request clearml-agent makes passes through a recorder: a compatible server answers none
of them with an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.compare.agents import AgentUnavailable, ClearmlAgent, Running, ensure_clearml_agent
from bench.compare.server import BenchServer
from tests.helpers import api_call
from tests.integration.daemon.support import console_text, wait_final

pytestmark = pytest.mark.slow

QUEUE = "compat"
TASK_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def clearml_agent() -> Path:
    try:
        return ensure_clearml_agent()
    except AgentUnavailable as exc:
        pytest.skip(f"clearml-agent 3.0.3 is not installable here: {exc}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchServer]:
    with BenchServer(tmp_path_factory.mktemp("compat-server") / "server.db") as srv:
        api_call(srv, "queues.create", {"name": QUEUE})
        yield srv


@pytest.fixture(scope="module")
def daemon(
    server: BenchServer, clearml_agent: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    kind = ClearmlAgent(worker_id="compat-clearml", executable=lambda: clearml_agent)
    running = kind.start(server, tmp_path_factory.mktemp("clearml-home"), QUEUE)
    yield running
    running.stop(kind.stop_signals)


def enqueue(server: BenchServer, name: str, code: str) -> str:
    script = {"diff": code, "entry_point": f"{name}.py", "working_dir": "."}
    task_id: str = api_call(
        server, "tasks.create", {"name": name, "type": "training", "script": script}
    )["id"]
    api_call(server, "tasks.enqueue", {"task": task_id, "queue_name": QUEUE})
    return task_id


def clearml_failures(server: BenchServer) -> list[str]:
    return [
        f"{f.method} {f.path} -> {f.status}: {f.response[:500]} (request: {f.request[:500]})"
        for f in server.recorder.failures
        if f.client == "clearml-agent"
    ]


def test_literal_script_completes_with_its_output_in_the_log(
    server: BenchServer, daemon: Running
) -> None:
    task_id = enqueue(server, "hello", "import sys\nprint('hello from', sys.version_info[:2])\n")

    doc = wait_final(server, task_id, timeout=TASK_TIMEOUT)

    log = console_text(server, task_id)
    assert doc["status"] == "completed", f"{doc.get('status_reason')}\n{log[-3000:]}"
    assert "hello from (3, 11)" in log
    assert clearml_failures(server) == []


def test_failing_script_ends_failed(server: BenchServer, daemon: Running) -> None:
    task_id = enqueue(server, "boom", "print('about to fail', flush=True)\nraise SystemExit(3)\n")

    doc = wait_final(server, task_id, timeout=TASK_TIMEOUT)

    assert doc["status"] == "failed", console_text(server, task_id)[-3000:]
    assert "about to fail" in console_text(server, task_id)
    assert clearml_failures(server) == []
