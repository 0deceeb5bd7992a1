"""Many agents popping one queue at once: every task is claimed exactly once."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from agent.server import queue_ops
from agent.server.embedded import EmbeddedServer
from agent.server.tasks import new_task_doc
from agent.server.taskstore import insert_task
from tests.helpers import api_call, python_executable, token_for

pytestmark = pytest.mark.slow

PROCESSES = 8
CALLS = 500
TASKS = PROCESSES * CALLS

CLAIMER = textwrap.dedent(
    """
    import json, sys
    import httpx
    url, token, queue, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    claimed, empty = [], 0
    with httpx.Client(headers={"Authorization": "Bearer " + token}, timeout=60) as client:
        for _ in range(calls):
            response = client.post(url + "/queues.get_next_task", json={"queue": queue})
            response.raise_for_status()
            entry = response.json()["data"].get("entry")
            if entry:
                claimed.append(entry["task"])
            else:
                empty += 1
    print(json.dumps({"claimed": claimed, "empty": empty}))
    """
)


def _fill_queue(server: EmbeddedServer, queue: str, count: int) -> set[str]:
    """Create and enqueue ``count`` tasks in one transaction, through the server's own code."""
    ids = set()
    with server.state.store.write() as conn:
        for n in range(count):
            doc = new_task_doc({"name": f"bulk-{n}", "status": "queued"}, "conveyor")
            insert_task(conn, doc)
            queue_ops.push(conn, queue, doc["id"])
            ids.add(doc["id"])
    return ids


def test_concurrent_claims_each_task_exactly_once(embedded_server: EmbeddedServer) -> None:
    queue = api_call(embedded_server, "queues.create", {"name": "contended"})["id"]
    expected = _fill_queue(embedded_server, queue, TASKS)
    token = token_for(embedded_server)
    argv = [python_executable(), "-c", CLAIMER, embedded_server.url, token, queue, str(CALLS)]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    claimed: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        result = json.loads(out)
        assert result["empty"] == 0  # 8 x 500 calls for 4,000 tasks: none may come back empty
        claimed.extend(result["claimed"])
    assert len(claimed) == TASKS
    assert len(set(claimed)) == TASKS  # nobody got the same task twice
    assert set(claimed) == expected
    assert api_call(embedded_server, "queues.get_num_entries", {"queue": queue})["num"] == 0
