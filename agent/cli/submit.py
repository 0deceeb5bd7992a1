"""Describing local work as a task, the SDK-free way to submit (``conveyor enqueue``).

``script_only`` sends the script text alone even from inside a checkout: for a self-contained
script whose repository the agent cannot reach.

A script inside a git checkout becomes repository + commit + uncommitted diff + entry point
(relative to its working dir); a script outside any checkout becomes a literal-script task (the
script text travels in ``script.diff``). Requirements come from ``--requirements`` or a
``requirements.txt`` beside the script or at the repository root.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import git  # imported where a script is described: `conveyor daemon` never loads it


class SubmitError(ValueError):
    """The local work cannot be described as a task; the message says why."""


@dataclass(frozen=True)
class Submission:
    name: str
    script: dict[str, Any]
    container: dict[str, Any] = field(default_factory=dict)


def describe_script(
    path: Path,
    args: tuple[str, ...] = (),
    *,
    requirements: Path | None = None,
    python: str = "",
    docker_image: str = "",
    name: str = "",
    script_only: bool = False,
) -> Submission:
    path = path.resolve()
    if not path.is_file():
        raise SubmitError(f"{path} is not a file")
    binary = python or f"python{sys.version_info.major}.{sys.version_info.minor}"
    entry = " ".join([path.name, *args]) if args else path.name
    script: dict[str, Any] = {"binary": binary}
    repo = None if script_only else _repo_of(path)
    if repo is None:
        script.update(diff=path.read_text(), entry_point=entry, working_dir=".")
        reqs_file = requirements or _first_existing(path.parent / "requirements.txt")
    else:
        root = Path(repo.working_tree_dir or path.parent)
        script.update(_git_fields(repo))
        rel_dir = path.parent.relative_to(root)
        script.update(entry_point=entry, working_dir=str(rel_dir) if str(rel_dir) != "." else ".")
        reqs_file = requirements or _first_existing(
            path.parent / "requirements.txt", root / "requirements.txt"
        )
    if reqs_file is not None:
        script["requirements"] = {"pip": reqs_file.read_text()}
    container = {"image": docker_image} if docker_image else {}
    return Submission(name=name or path.stem, script=script, container=container)


def _repo_of(path: Path) -> git.Repo | None:
    import git

    try:
        return git.Repo(path.parent, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def _git_fields(repo: git.Repo) -> dict[str, Any]:
    try:
        commit = repo.head.commit.hexsha
    except ValueError as exc:
        raise SubmitError(f"{repo.working_tree_dir} has no commit yet: commit first") from exc
    remote_url = next((r.url for r in repo.remotes if r.name == "origin"), "")
    if not remote_url and repo.remotes:
        remote_url = repo.remotes[0].url
    repository = remote_url or Path(repo.git_dir).parent.as_uri()
    branch = "" if repo.head.is_detached else repo.active_branch.name
    diff = repo.git.diff("HEAD", "--binary")
    return {
        "repository": repository,
        "version_num": commit,
        "branch": branch,
        "diff": diff + "\n" if diff else "",
    }


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)
