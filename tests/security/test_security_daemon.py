"""Injection attempts end to end, through a real ``conveyor daemon``: each task fails with a
reason naming the field (or, for values that are only data, runs with them as inert data),
nothing the attacker asked for ever runs, and the agent goes on serving.

Every attack tries to create a file; the test's last word is that none of them exists.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.faults.reliability import iter_records, launch, stop
from tests.integration.daemon.support import Repo, create_task, git, wait_final

pytestmark = pytest.mark.slow

SHOW = textwrap.dedent(
    """
    import json, os, sys
    print("argv " + json.dumps(sys.argv[1:]))
    print("env " + json.dumps({k: os.environ.get(k) for k in ("CLEARML_API_HOST", "SAFE_VALUE")}))
    """
)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    return Repo(url=bare.as_uri(), work=work)


def _param(section: str, name: str, value: str) -> dict[str, str]:
    return {"section": section, "name": name, "value": value}


def test_injections_fail_with_reasons_and_nothing_runs(
    embedded_server: EmbeddedServer, repo: Repo, tmp_path: Path, agent_cache: Path
) -> None:
    commit = repo.commit({"show.py": SHOW})
    pwned = tmp_path / "pwned"
    pwned.mkdir()
    touch = f"touch {pwned}/"

    def source(**fields: str) -> dict[str, str]:
        return {"repository": repo.url, "entry_point": "show.py", **fields}

    refused: dict[str, tuple[dict[str, Any], str]] = {
        "branch option": (source(branch=f"--upload-pack={touch}1"), "branch"),
        "tag option": (source(tag="--upload-pack=sh"), "tag"),
        "ext transport": (source(repository=f"ext::sh -c {touch}3"), "git transport helper"),
        "ssh option host": (
            source(repository=f"ssh://-oProxyCommand=touch%20{pwned}/4/repo"),
            "host starting with '-'",
        ),
        "ssh option host in brackets": (
            source(repository="ssh://[-oProxyCommand=sh]/repo"),
            "host starting with '-'",
        ),
        "commit option": (source(version_num="--output=x"), "commit"),
        "entry point outside": (source(entry_point="../../../../tmp/x.py"), "entry point"),
        "working dir absolute": (source(working_dir="/tmp"), "working directory"),
        "literal script outside": (
            {"diff": f"open('{pwned}/7', 'w')\n", "entry_point": "../../escape.py"},
            "entry point",
        ),
        "binary with a command": (
            source(version_num=commit, binary=f"python3; {touch}8"),
            "not an interpreter",
        ),
    }
    inert_entry = f"show.py $({touch}9) ';' {touch}10 `{touch}11` '|' sh"
    agent = launch(embedded_server, tmp_path / "agent", agent_cache, "sec")
    try:
        ids = {
            name: create_task(embedded_server, name, script, "sec")
            for name, (script, _) in refused.items()
        }
        inert = create_task(
            embedded_server,
            "inert",
            source(version_num=commit, entry_point=inert_entry),
            "sec",
            hyperparams={
                "Environment": {
                    "CLEARML_API_HOST": _param("Environment", "CLEARML_API_HOST", "http://evil"),
                    "A=B": _param("Environment", "A=B", "1"),
                    "SAFE_VALUE": _param("Environment", "SAFE_VALUE", f"$({touch}12)"),
                }
            },
        )
        for name, (_, reason) in refused.items():
            doc = wait_final(embedded_server, ids[name], timeout=60)
            assert doc["status"] == "failed", name
            assert reason in doc["status_reason"], (name, doc["status_reason"])
        doc = wait_final(embedded_server, inert, timeout=120)
        assert doc["status"] == "completed", doc.get("status_reason")
    finally:
        stop(agent)

    console = [line for _, line in iter_records(embedded_server, inert)]
    argv = json.loads(next(ln for ln in console if ln.startswith("argv "))[5:])
    assert argv == shlex.split(inert_entry)[1:]  # each word as written: no shell saw them
    env = json.loads(next(ln for ln in console if ln.startswith("env "))[4:])
    assert env == {"CLEARML_API_HOST": embedded_server.url, "SAFE_VALUE": f"$({touch}12)"}
    refusals = [ln for ln in console if "refused" in ln]
    assert any("'CLEARML_API_HOST'" in ln for ln in refusals), console
    assert any("'A=B'" in ln for ln in refusals), console
    assert list(pwned.iterdir()) == []  # no attack ran anything
