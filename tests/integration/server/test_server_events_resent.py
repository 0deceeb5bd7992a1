"""A batch of log events sent again (its answer was lost: the server killed after its commit)
is stored once; different lines with the same timestamp are all kept."""

from __future__ import annotations

from pathlib import Path

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call


def _log(task: str, ts: int, msg: str, worker: str = "w") -> dict[str, object]:
    return {"type": "log", "task": task, "timestamp": ts, "msg": msg, "worker": worker}


def test_a_resent_batch_is_stored_once(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path / "s.db") as server:
        task = str(api_call(server, "tasks.create", {"name": "t", "type": "training"})["id"])
        batch = [_log(task, 1000, "a\nb"), _log(task, 1001, "c")]
        api_call(server, "events.add_batch", {"requests": batch})
        api_call(server, "events.add_batch", {"requests": [*batch, _log(task, 1002, "d")]})
        # same moment, other text or other worker: other lines, kept
        api_call(server, "events.add_batch", {"requests": [_log(task, 1001, "e")]})
        api_call(server, "events.add_batch", {"requests": [_log(task, 1001, "c", worker="v")]})
        body = {"task": task, "order": "asc", "navigate_earlier": False}
        events = api_call(server, "events.get_task_log", body)["events"]
        assert [e["msg"] for e in events] == ["a\nb", "c", "e", "c", "d"]
