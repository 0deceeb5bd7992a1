"""Git credentials and the API secret never land in a log event, a task field, a console line,
the agent's own log or anything the agent writes to disk.

Two ways an operator gives git credentials: ``CONVEYOR_GIT_USER``/``CONVEYOR_GIT_PASS`` (the
agent's settings), or ``user:token@`` in the task's repository URL (the task's own field: that
one field keeps what the user wrote, nothing else may repeat it). The API key and secret are in
every task's environment by necessity (the task's SDK logs in with them): they must still not
be printed or stored by the agent.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.faults.reliability import iter_log_events, launch, stop
from tests.integration.daemon.support import create_task, task_doc, wait_final

pytestmark = pytest.mark.slow

WRONG_TOKEN = "wr0ng-t0ken-7c1d2e"


def _files_containing(roots: Iterable[Path], secret: str) -> list[Path]:
    needle = secret.encode()
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    if needle in path.read_bytes():
                        found.append(path)
                except OSError:
                    continue
    return found


def _without_repository(doc: dict[str, Any]) -> dict[str, Any]:
    """The task document minus the one field the user wrote the URL into."""
    script = {k: v for k, v in doc.get("script", {}).items() if k != "repository"}
    return {**doc, "script": script}


def _stored_events(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return "\n".join(str(row[0]) for row in conn.execute("SELECT doc FROM events"))


def _assert_nowhere(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


def test_settings_credentials_and_api_secret_leak_nowhere(
    embedded_server: EmbeddedServer, private_git: Any, tmp_path: Path, agent_cache: Path
) -> None:
    data_dir = tmp_path / "agent"
    env = {"CONVEYOR_GIT_USER": private_git.user, "CONVEYOR_GIT_PASS": private_git.token}
    agent = launch(embedded_server, data_dir, agent_cache, "settings", env=env)
    env_file = tmp_path / "task-env.json"
    try:
        good = create_task(
            embedded_server,
            "private",
            {"repository": private_git.clean_url, "entry_point": f"dump_env.py {env_file}"},
            "settings",
        )
        missing = create_task(
            embedded_server,
            "missing repository",
            {"repository": private_git.clean_url.replace("private", "nope"), "entry_point": "x.py"},
            "settings",
        )
        assert wait_final(embedded_server, good)["status"] == "completed"
        doc = wait_final(embedded_server, missing)
        assert doc["status"] == "failed"
        assert "git fetch failed" in doc["status_reason"]
    finally:
        stop(agent)
    assert any(a.startswith("Basic ") for a in private_git.seen_authorization)  # it was used

    secret = embedded_server.credentials.secret_key
    task_env = json.loads(env_file.read_text())
    assert not [k for k, v in task_env.items() if private_git.token in v]  # not passed to tasks
    assert "CONVEYOR_GIT_PASS" not in task_env and "CONVEYOR_SECRET_KEY" not in task_env
    assert task_env["CLEARML_API_SECRET_KEY"] == secret  # the task's SDK needs it: by design

    for task_id in (good, missing):
        document = json.dumps(task_doc(embedded_server, task_id))
        events = json.dumps(list(iter_log_events(embedded_server, task_id)))
        for needle in (private_git.token, secret):
            _assert_nowhere(needle, document, events, agent.log())
    # Nothing on disk either: the server's database (WAL included), the agent's data
    # directory and its git mirrors.
    stored = [embedded_server.db_path.parent, data_dir, agent_cache / "git"]
    assert _files_containing(stored, private_git.token) == []
    _assert_nowhere(secret, _stored_events(embedded_server.db_path))


def test_url_credentials_stay_in_the_field_the_user_wrote(
    embedded_server: EmbeddedServer, private_git: Any, tmp_path: Path, agent_cache: Path
) -> None:
    data_dir = tmp_path / "agent"
    agent = launch(embedded_server, data_dir, agent_cache, "url")
    env_file = tmp_path / "task-env.json"
    try:
        good = create_task(
            embedded_server,
            "token in url",
            {
                "repository": private_git.url_with(private_git.token),
                "entry_point": f"dump_env.py {env_file}",
            },
            "url",
        )
        wrong = create_task(
            embedded_server,
            "wrong token in url",
            {"repository": private_git.url_with(WRONG_TOKEN), "entry_point": "dump_env.py"},
            "url",
        )
        assert wait_final(embedded_server, good)["status"] == "completed"
        doc = wait_final(embedded_server, wrong)
        assert doc["status"] == "failed"
        assert "git fetch failed" in doc["status_reason"]
        assert private_git.clean_url in doc["status_reason"]  # the URL is named, masked
    finally:
        stop(agent)

    task_env = json.loads(env_file.read_text())
    assert not [k for k, v in task_env.items() if private_git.token in v]
    for task_id in (good, wrong):
        document = task_doc(embedded_server, task_id)
        assert "@" in document["script"]["repository"]  # what the user wrote, kept as written
        rest = json.dumps(_without_repository(document))
        events = json.dumps(list(iter_log_events(embedded_server, task_id)))
        for needle in (private_git.token, WRONG_TOKEN):
            _assert_nowhere(needle, rest, events, agent.log())
    _assert_nowhere(private_git.token, _stored_events(embedded_server.db_path))
    for needle in (private_git.token, WRONG_TOKEN):
        assert _files_containing([data_dir, agent_cache / "git"], needle) == []
