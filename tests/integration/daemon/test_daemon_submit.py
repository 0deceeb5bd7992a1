"""`conveyor enqueue`'s description of local work, on real git checkouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli.submit import SubmitError, describe_script
from tests.integration.daemon.support import Repo


def test_script_in_a_checkout_records_repo_commit_diff_and_requirements(repo: Repo) -> None:
    commit = repo.commit({"src/train.py": "print(1)\n", "requirements.txt": "six\n"})
    (repo.work / "src" / "train.py").write_text("print(2)\n")
    sub = describe_script(repo.work / "src" / "train.py", ("--lr", "0.1"), python="3.10")
    assert sub.name == "train"
    assert sub.script["version_num"] == commit
    assert sub.script["repository"] == repo.url.removeprefix("file://")  # origin as configured
    assert sub.script["entry_point"] == "train.py --lr 0.1"
    assert sub.script["working_dir"] == "src"
    assert "+print(2)" in sub.script["diff"]
    assert sub.script["requirements"] == {"pip": "six\n"}
    assert sub.script["binary"] == "3.10"


def test_script_only_and_scripts_outside_git_travel_as_text(repo: Repo, tmp_path: Path) -> None:
    repo.commit({"a.py": "print('a')\n"})
    sub = describe_script(repo.work / "a.py", script_only=True)
    assert "repository" not in sub.script
    assert sub.script["diff"] == "print('a')\n"
    loose = tmp_path / "loose.py"
    loose.write_text("print('loose')\n")
    assert describe_script(loose).script["diff"] == "print('loose')\n"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="is not a file"):
        describe_script(tmp_path / "nope.py")
