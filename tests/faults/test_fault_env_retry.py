"""An environment that cannot be built for a network fault is an infrastructure failure: the task
goes back to its queue up to its cap (``Conveyor/max_retries``), each attempt's console says so,
and then it fails with the stage's own reason. A task with a bad ``Conveyor/max_retries`` fails
at once, naming the parameter. An exit code listed in ``Conveyor/retry_on_exit_codes`` is
retried."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from tests.faults.reliability import iter_records, launch, stop
from tests.integration.daemon.support import create_task, wait_final

pytestmark = pytest.mark.slow


def _closed_port() -> int:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _conveyor(**values: str) -> dict[str, dict[str, dict[str, str]]]:
    return {
        "Conveyor": {k: {"section": "Conveyor", "name": k, "value": v} for k, v in values.items()}
    }


def test_unreachable_repository_is_retried_up_to_the_cap_then_fails(
    tmp_path: Path, agent_cache: Path
) -> None:
    with EmbeddedServer(tmp_path / "server.db") as server:
        agent = launch(server, tmp_path / "agent", agent_cache, "env")
        try:
            script = {
                "repository": f"http://127.0.0.1:{_closed_port()}/repo.git",
                "branch": "main",
                "entry_point": "train.py",
            }
            task_id = create_task(
                server, "unreachable", script, "env", hyperparams=_conveyor(max_retries="1")
            )
            doc = wait_final(server, task_id, timeout=120)
            assert doc["status"] == "failed"
            assert doc["runtime"]["conveyor_attempt"] == 2  # one retry, as the task asked
            assert "refused" in doc["status_reason"].lower() or "connect" in doc["status_reason"]
            assert "no retries left" in doc["status_message"]
            lines = [line for _, line in iter_records(server, task_id)]
            requeued = [line for line in lines if "requeued (attempt 2 of 2)" in line]
            assert len(requeued) == 1, lines
            assert requeued[0].startswith(
                "conveyor: attempt 1 failed: its environment could not be built: "
            )
            assert "conveyor: attempt 2 of 2" in lines

            bad = create_task(
                server, "bad cap", {"diff": "print('never')\n"}, "env",
                hyperparams=_conveyor(max_retries="lots"),
            )  # fmt: skip
            doc = wait_final(server, bad, timeout=60)
            assert doc["status"] == "failed"
            assert doc["status_reason"] == (
                "Conveyor/max_retries must be a whole number, got 'lots'"
            )

            # an exit code the task lists is retried; attempt 2 exits 0
            flaky = "import os, sys\nsys.exit(75 if os.environ['CONVEYOR_ATTEMPT'] == '1' else 0)\n"
            retried = create_task(
                server, "flaky", {"diff": flaky}, "env",
                hyperparams=_conveyor(retry_on_exit_codes="75, 76"),
            )  # fmt: skip
            doc = wait_final(server, retried, timeout=120)
            assert (doc["status"], doc["runtime"]["conveyor_attempt"]) == ("completed", 2)
            lines = [line for _, line in iter_records(server, retried)]
            assert (
                "conveyor: attempt 1 failed: the script exited with a code the task retries on: "
                "exit code 75; requeued (attempt 2 of 3)"
            ) in lines
        finally:
            stop(agent)
