"""End to end: a real `conveyor daemon` against the real embedded server, real git, real venvs."""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import (
    CONVEYOR,
    Agent,
    Repo,
    agent_env,
    console_text,
    create_task,
    task_doc,
    wait_final,
    wait_for,
)

pytestmark = pytest.mark.slow

HELLO = textwrap.dedent(
    """
    import sys
    print("hello from the task")
    print("to stderr", file=sys.stderr)
    print("greeting:", open("greeting.txt").read().strip())
    """
)


def git_script(repo: Repo, commit: str, entry: str = "main.py", **extra: Any) -> dict[str, Any]:
    return {"repository": repo.url, "version_num": commit, "entry_point": entry, **extra}


def test_git_task_runs_patched_code_and_reports(
    embedded_server: EmbeddedServer, repo: Repo, agent_factory: Any
) -> None:
    commit = repo.commit({"main.py": HELLO, "greeting.txt": "committed\n"})
    diff = textwrap.dedent(
        """\
        diff --git a/greeting.txt b/greeting.txt
        --- a/greeting.txt
        +++ b/greeting.txt
        @@ -1 +1 @@
        -committed
        +patched
        """
    )
    agent_factory()
    plain = create_task(embedded_server, "plain", git_script(repo, commit))
    patched = create_task(embedded_server, "patched", git_script(repo, commit, diff=diff))
    for task_id, greeting in ((plain, "committed"), (patched, "patched")):
        doc = wait_final(embedded_server, task_id)
        text = console_text(embedded_server, task_id)
        assert doc["status"] == "completed", (doc.get("status_reason"), text)
        assert "hello from the task" in text
        assert "to stderr" in text
        assert f"greeting: {greeting}" in text


def test_literal_script_on_a_branch_head(
    embedded_server: EmbeddedServer, agent_factory: Any
) -> None:
    agent_factory()
    script = {"diff": "print('literal', 6 * 7)\n", "entry_point": "lit.py"}
    task_id = create_task(embedded_server, "literal", script)
    doc = wait_final(embedded_server, task_id)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "literal 42" in console_text(embedded_server, task_id)


def test_bad_tasks_fail_with_reasons_and_the_agent_keeps_serving(
    embedded_server: EmbeddedServer, repo: Repo, agent_factory: Any
) -> None:
    commit = repo.commit({"main.py": "import sys; sys.exit(3)\n", "ok.py": "print('fine')\n"})
    agent_factory()
    cases = {
        "missing commit": (git_script(repo, "0" * 40), "not found"),
        "exit code": (git_script(repo, commit), "exit code 3"),
        "missing entry": (git_script(repo, commit, entry="nope.py"), "nope.py"),
        "bad python": (git_script(repo, commit, entry="ok.py", binary="python9.9"), "9.9"),
        "bad requirement": (
            git_script(
                repo,
                commit,
                entry="ok.py",
                requirements={"pip": "conveyor-no-such-package-zzz==1.0"},
            ),
            "conveyor-no-such-package-zzz",
        ),
        "injected branch": (
            {
                "repository": repo.url,
                "branch": "--upload-pack=touch /tmp/x",
                "entry_point": "ok.py",
            },
            "branch",
        ),
    }
    ids = {name: create_task(embedded_server, name, script) for name, (script, _) in cases.items()}
    good = create_task(embedded_server, "good", git_script(repo, commit, entry="ok.py"))
    for name, (_, reason) in cases.items():
        doc = wait_final(embedded_server, ids[name])
        assert doc["status"] == "failed", name
        assert reason in doc["status_reason"], (name, doc["status_reason"])
    assert wait_final(embedded_server, good)["status"] == "completed"


TREE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    kids = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]),
        subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"]),
    ]
    with open(sys.argv[1], "w") as fh:
        fh.write(" ".join(str(p) for p in [os.getpid()] + [k.pid for k in kids]))
    print("tree started", flush=True)
    time.sleep(600)
    """
)


def test_abort_stops_the_whole_process_tree(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_factory: Any
) -> None:
    pids_file = tmp_path / "pids"
    agent_factory()
    script = {"diff": TREE, "entry_point": f"tree.py {pids_file}"}
    task_id = create_task(embedded_server, "tree", script)
    wait_for(lambda: pids_file.exists() and pids_file.read_text(), 60, "the process tree")
    pids = [int(p) for p in pids_file.read_text().split()]
    api_call(embedded_server, "tasks.stop", {"task": task_id})
    doc = wait_final(embedded_server, task_id, timeout=60)
    assert doc["status"] == "stopped"
    assert "aborted" in doc["status_reason"]

    def all_gone() -> bool:
        return not any(psutil.pid_exists(p) and _alive(p) for p in pids)

    wait_for(all_gone, 15, "every process of the tree to be gone")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_first_sigterm_drains_second_aborts(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_factory: Any
) -> None:
    agent: Agent = agent_factory()
    marker = tmp_path / "started"
    touch = f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
    slow = touch + "time.sleep(1.5)\nprint('drained ok')\n"
    first = create_task(embedded_server, "drain", {"diff": slow, "entry_point": "slow.py"})
    wait_for(marker.exists, 60, "the task to start")
    agent.signal(signal.SIGTERM)
    queued = create_task(
        embedded_server, "after-sigterm", {"diff": "print(1)\n", "entry_point": "a.py"}
    )
    assert wait_final(embedded_server, first)["status"] == "completed"
    assert agent.wait(60) == 0
    assert task_doc(embedded_server, queued)["status"] == "queued"  # not claimed while draining

    agent2: Agent = agent_factory(queue="q2")
    marker.unlink()
    long = touch + "time.sleep(600)\n"
    second = create_task(
        embedded_server, "abort", {"diff": long, "entry_point": "l.py"}, queue="q2"
    )
    wait_for(marker.exists, 60, "the second task to start")
    agent2.signal(signal.SIGTERM)
    # Signals of one kind coalesce while pending: send the second once the first was seen.
    wait_for(lambda: '"draining"' in agent2.log(), 30, "the agent to start draining")
    agent2.signal(signal.SIGTERM)
    doc = wait_final(embedded_server, second, timeout=60)
    assert doc["status"] == "stopped"
    assert doc["status_reason"] == "agent shutdown"
    assert agent2.wait(60) == 0


def test_execute_runs_one_task_in_the_foreground(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_cache: Path
) -> None:
    task_id = api_call(
        embedded_server,
        "tasks.create",
        {
            "name": "fg",
            "type": "training",
            "script": {"diff": "print('fg ok')\n", "entry_point": "f.py"},
        },
    )["id"]
    env = agent_env(embedded_server, tmp_path / "fg", agent_cache, "fg")
    done = subprocess.run(
        [str(CONVEYOR), "execute", "--id", task_id], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"task {task_id}: completed" in done.stdout
    assert task_doc(embedded_server, task_id)["status"] == "completed"
    assert "fg ok" in console_text(embedded_server, task_id)
