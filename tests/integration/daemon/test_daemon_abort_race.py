"""An abort stands: a `tasks.stop` that lands around an SDK script's `Task.init` is never lost.

The SDK's own `tasks.started` (sent by `Task.init` in a task an agent runs) used to erase the
"stopping" request of a stop that came just before it; the agent never saw it and the task ran
on. Stops are sent at offsets from 0 to 2 s after the script calls `Task.init` (it writes a
marker file just before), which spans `Task.init` and its `tasks.started`; the agent polls every
POLL seconds, so a stop waits for it while the SDK starts.
Every task must end `stopped`, in bounded time.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import create_task, task_doc, wait_final, wait_for

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys
    import time

    from clearml import Task

    open(sys.argv[1], "w").close()
    task = Task.init(project_name="aborts", task_name="sleeper")
    print("task initialised", flush=True)
    time.sleep(300)
    """
)
OFFSETS = (0.0, 0.5, 1.0, 1.5, 2.0)
# The agent's abort poll, longer than its default (1 s) so that a stop sent before the SDK's
# `tasks.started` is still unseen when that arrives: the race is hit at every offset, not by
# chance. An abort then takes up to POLL + the grace (2 s) + start-up.
POLL = 8.0


def _running(server: EmbeddedServer, task_id: str, marker: Path) -> bool:
    status = task_doc(server, task_id)["status"]
    assert status in ("queued", "in_progress"), f"task {task_id} is {status} before the stop"
    return marker.exists()


@pytest.mark.timeout(900)
def test_a_stop_at_any_moment_after_start_ends_the_task_stopped(
    embedded_server: EmbeddedServer, agent_factory: Any, tmp_path: Path
) -> None:
    agent_factory(queue="aborts", env={"CONVEYOR_ABORT_POLL_INTERVAL": str(POLL)})
    outcomes: dict[float, tuple[str, str, float]] = {}
    for offset in OFFSETS:
        marker = tmp_path / f"started-{offset}"
        script = {
            "diff": SCRIPT,
            "entry_point": f"sleeper.py {marker}",
            "requirements": {"pip": "clearml==2.1.12"},
        }
        task_id = create_task(embedded_server, f"abort-at-{offset}", script, queue="aborts")
        wait_for(
            lambda t=task_id, m=marker: _running(embedded_server, t, m), 300, f"{task_id} to run"
        )
        time.sleep(offset)  # the offset under test, not a synchronisation
        api_call(embedded_server, "tasks.stop", {"task": task_id})
        asked = time.monotonic()
        try:
            doc = wait_final(embedded_server, task_id, timeout=POLL + 40)
        except AssertionError as exc:
            doc = task_doc(embedded_server, task_id)
            raise AssertionError(
                f"abort at +{offset} s lost: {doc['status']} {doc['status_message']!r}; "
                f"before: {outcomes}"
            ) from exc
        outcomes[offset] = (doc["status"], doc.get("status_reason", ""), time.monotonic() - asked)
        assert doc["status"] == "stopped", outcomes
