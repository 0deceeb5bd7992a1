"""The `conveyor` CLI as a user runs it: server, enqueue, logs --follow, ls, abort."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import (
    CONVEYOR,
    Repo,
    agent_env,
    console_text,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow


def _run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONVEYOR), *args], env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


def test_server_agent_enqueue_and_follow(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))},
        "CONVEYOR_DATA_DIR": str(tmp_path / "data"),
        "CONVEYOR_CACHE_DIR": str(tmp_path / "cache"),
        "CONVEYOR_CONFIG": "",
        "CONVEYOR_EMBEDDED_PORT": "0",
        "CONVEYOR_LOG_FORMAT": "json",
    }
    assert _run(env, "ls", "tasks").returncode == 3  # no server yet: exit code 3
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen([str(CONVEYOR), "daemon"], env=env, stdout=log, stderr=log)
    try:
        state = tmp_path / "data" / "server.json"
        wait_for(state.exists, 30, "the embedded server to record itself")
        assert oct(state.stat().st_mode & 0o777) == "0o600"
        assert json.loads(state.read_text())["api_host"].startswith("http://127.0.0.1:")
        script = tmp_path / "job.py"
        script.write_text("import sys\nprint('job says', sys.argv[1:])\n")
        enq = _run(env, "enqueue", str(script), "--flag", "x")
        assert enq.returncode == 0, enq.stderr
        task_id = enq.stdout.strip()
        follow = _run(env, "logs", task_id, "--follow")
        assert follow.returncode == 0, follow.stderr
        assert follow.stdout.count("job says ['--flag', 'x']") == 1
        assert "completed" in follow.stderr
        listing = _run(env, "ls", "tasks")
        assert task_id in listing.stdout and "completed" in listing.stdout
        assert "default" in _run(env, "ls", "queues").stdout
        shown = _run(env, "config")
        assert json.loads(shown.stdout)["embedded_port"] == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    assert not (tmp_path / "data" / "server.json").exists()


def test_build_prepares_without_running(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_cache: Path
) -> None:
    marker = tmp_path / "ran"
    script = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nprint('built ok')\n"
    task_id = api_call(
        embedded_server,
        "tasks.create",
        {"name": "b", "type": "training", "script": {"diff": script, "entry_point": "b.py"}},
    )["id"]
    env = agent_env(embedded_server, tmp_path / "data", agent_cache, "build")
    target = tmp_path / "target"
    done = _run(env, "build", "--id", task_id, "--target", str(target))
    assert done.returncode == 0, done.stderr
    assert not marker.exists()  # prepared, not run
    command = done.stdout.strip().splitlines()[-1]
    assert (target / "venv" / "bin" / "python").exists()
    assert "CLEARML_API_SECRET_KEY" not in command
    ran = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert "built ok" in ran.stdout, ran.stderr
    assert marker.exists()


def test_enqueue_from_a_dirty_checkout_runs_the_uncommitted_code(
    embedded_server: EmbeddedServer,
    repo: Repo,
    tmp_path: Path,
    agent_cache: Path,
    agent_factory: Any,
) -> None:
    repo.commit({"app/run.py": "print('committed version')\n"})
    (repo.work / "app" / "run.py").write_text("print('uncommitted version')\n")
    agent_factory(queue="dirty")
    env = agent_env(embedded_server, tmp_path / "cli", agent_cache, "cli")
    enq = _run(env, "enqueue", str(repo.work / "app" / "run.py"), "--queue", "dirty")
    assert enq.returncode == 0, enq.stderr
    task_id = enq.stdout.strip()
    doc = wait_final(embedded_server, task_id)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert doc["script"]["repository"]  # sent as a git task, not as a literal script
    lines = console_text(embedded_server, task_id).splitlines()
    assert "uncommitted version" in lines
    assert "committed version" not in lines
