"""Source stage: the task's code at the recorded revision, in ``<task dir>/src``.

One bare mirror per repository lives under ``mirror_root`` and is shared by every task (and
every agent process on the machine: a ``filelock`` guards it). A task whose commit is already in
the mirror skips the network entirely (a cache hit); otherwise the mirror fetches all branches
and tags. The task gets its own clone of the mirror (a local clone: git hardlinks the object
packs, so it costs about as much as ``--shared`` without depending on the mirror afterwards),
checked out at the resolved commit, with submodules and the task's uncommitted diff applied.

A task without a repository whose ``diff`` is not a patch is a *literal script*: its text is
written out as the entry point and no git runs at all.

Credentials never travel in URLs, command lines, logs or messages: git asks a private
``GIT_ASKPASS`` script that reads them from its environment, and every URL or git message we
print is masked. ``GIT_TERMINAL_PROMPT=0`` keeps git from ever waiting on a prompt.
"""

from __future__ import annotations

import contextlib
import posixpath
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import filelock
import git
import structlog

from agent.pipeline.console import Console
from agent.pipeline.git_cmd import add_config, first_error, git_env, git_out, git_run
from agent.pipeline.paths import remove_path
from agent.pipeline.source_request import (
    URL_SCHEME,
    GitCredentials,
    SourceRequest,
    SourceResult,
    check_relative,
    describe_revision,
    mask_url,
    mirror_dir_name,
    patch_strip_level,
    revision_candidates,
    split_credentials,
    stage_error,
    validate_request,
)

log = structlog.get_logger()

SRC_DIR = "src"
DEFAULT_SCRIPT_NAME = "script.py"
PATCH_FILE = "uncommitted.diff"  # written in the task dir, outside the checkout
SHORT_SHA = 7
NETWORK_TIMEOUT = 1800.0  # seconds: a fetch or submodule update of a big repository
LOCK_TIMEOUT = 3600.0  # seconds another task may hold a mirror (its first fetch)


# --- the stage ---------------------------------------------------------------------------


def prepare_source(
    req: SourceRequest,
    *,
    task_dir: Path,
    mirror_root: Path,
    console: Console,
    credentials: GitCredentials | None = None,
) -> SourceResult:
    """Check the task's code out into ``task_dir/src``; StageError with a reason on failure."""
    validate_request(req)
    started = time.monotonic()
    root = task_dir.absolute() / SRC_DIR
    if req.is_literal_script:
        return _write_literal_script(req, root, console)
    if not req.repository:
        raise stage_error("task has no repository and no script: nothing to check out")
    url, url_credentials = split_credentials(req.repository)
    shown = mask_url(url)
    try:
        with git_env(credentials or url_credentials) as env:
            mirror = mirror_root.absolute() / mirror_dir_name(url)
            commit, cache_hit = _mirror_and_clone(url, req, mirror, root, env)
            _checkout(root, url, commit, req.branch, env)
            how = "cache hit" if cache_hit else "fetched"
            seconds = time.monotonic() - started
            console.info(f"source: {shown} @ {commit[:SHORT_SHA]} ({how}, {seconds:.2f} s)")
            if req.submodules and (root / ".gitmodules").is_file():
                _update_submodules(root, url, env, console)
            if req.diff.strip():
                _apply_diff(root, req.diff, env)
                console.info(
                    f"source: applied the uncommitted diff ({_count_files(req.diff)} files)"
                )
    except git.GitCommandError as exc:  # a step without a more specific reason
        raise stage_error(f"git failed: {first_error(exc, {})}") from exc
    except OSError as exc:
        raise stage_error(f"could not write the checkout in {root}: {exc}") from exc
    cwd, entry = _locate(root, req)
    log.info(
        "source.ready",
        repository=shown,
        commit=commit,
        cache_hit=cache_hit,
        seconds=time.monotonic() - started,
    )
    return SourceResult(root=root, cwd=cwd, entry_point=entry, commit=commit, cache_hit=cache_hit)


def _write_literal_script(req: SourceRequest, root: Path, console: Console) -> SourceResult:
    name = req.entry_point or DEFAULT_SCRIPT_NAME
    check_relative("entry point", name)
    remove_path(root)
    cwd = root / posixpath.normpath(req.working_dir or ".")
    path = cwd / posixpath.normpath(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(req.diff, encoding="utf-8")
    except OSError as exc:
        raise stage_error(f"could not write the task's script {name}: {exc}") from exc
    console.info(f"source: literal script {name} ({len(req.diff.splitlines())} lines)")
    return SourceResult(root=root, cwd=cwd, entry_point=path, commit="", cache_hit=False)


def _mirror_and_clone(
    url: str, req: SourceRequest, mirror: Path, root: Path, env: Mapping[str, str]
) -> tuple[str, bool]:
    """Under the mirror's lock: bring it up to date if needed, resolve, clone it to ``root``."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(f"{mirror}.lock", timeout=LOCK_TIMEOUT)
    try:
        with lock:
            _open_mirror(mirror, url)
            commit = _resolve(mirror, req) if req.commit else None
            cache_hit = commit is not None
            if commit is None:
                _fetch(mirror, url, env, default_branch=not (req.commit or req.tag or req.branch))
                commit = _resolve(mirror, req)
            if commit is None:
                raise stage_error(
                    f"git checkout failed: {describe_revision(req)} not found in {mask_url(url)}"
                )
            remove_path(root)
            root.parent.mkdir(parents=True, exist_ok=True)
            git_run(
                root.parent,
                "clone",
                "--quiet",
                "--no-checkout",
                "--",
                str(mirror),
                str(root),
                env=env,
                what="cloning the mirror",
            )
    except filelock.Timeout as exc:
        raise stage_error(
            f"git mirror of {mask_url(url)} stayed locked by another task for {LOCK_TIMEOUT:.0f} s"
        ) from exc
    return commit, cache_hit


def _open_mirror(mirror: Path, url: str) -> None:
    """Create the bare mirror on first use (atomically, by rename); keep its URL current."""
    if (mirror / "HEAD").is_file():
        try:
            if git_out(mirror, "config", "--get", "remote.origin.url") != url:
                git_out(mirror, "remote", "set-url", "origin", url)
            return
        except git.GitCommandError as exc:  # damaged (e.g. a crash mid-write): start over
            log.warning("source.mirror_rebuilt", mirror=str(mirror), error=first_error(exc, {}))
    remove_path(mirror)
    staging = Path(tempfile.mkdtemp(prefix=f"{mirror.name}.", dir=mirror.parent))
    try:
        git.Repo.init(str(staging), bare=True)
        git_run(staging, "remote", "add", "origin", url, env={}, what="configuring")
        git_run(
            staging,
            "config",
            "--add",
            "remote.origin.fetch",
            "+refs/tags/*:refs/tags/*",
            env={},
            what="configuring",
        )
        staging.rename(mirror)
    finally:
        remove_path(staging)


def _fetch(mirror: Path, url: str, env: Mapping[str, str], *, default_branch: bool) -> None:
    try:
        git_out(mirror, "fetch", "--quiet", "--prune", "origin", env=env, timeout=NETWORK_TIMEOUT)
        if default_branch:
            git_out(
                mirror, "remote", "set-head", "origin", "--auto", env=env, timeout=NETWORK_TIMEOUT
            )
    except git.GitCommandError as exc:
        raise stage_error(f"git fetch failed for {mask_url(url)}: {first_error(exc, env)}") from exc


def _resolve(mirror: Path, req: SourceRequest) -> str | None:
    for spec in revision_candidates(req):
        try:
            return git_out(mirror, "rev-parse", "--verify", "--quiet", spec)
        except git.GitCommandError:
            continue
    return None


def _checkout(root: Path, url: str, commit: str, branch: str, env: Mapping[str, str]) -> None:
    """Point ``origin`` at the real repository (the task's SDK records it), then check out."""
    git_run(root, "remote", "set-url", "origin", url, env=env, what="configuring the checkout")
    target = ["-B", branch, commit] if branch else ["--detach", commit]
    git_run(
        root,
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "--quiet",
        *target,
        env=env,
        what="git checkout",
    )


def _update_submodules(root: Path, url: str, env: Mapping[str, str], console: Console) -> None:
    sub_env = dict(env)
    if not URL_SCHEME.match(url) or url.lower().startswith("file://"):
        # A local parent may have local submodules; git refuses file:// in submodules by
        # default (CVE-2022-39253), which is right for remote parents only.
        add_config(sub_env, "protocol.file.allow", "always")
    try:
        git_out(
            root,
            "submodule",
            "update",
            "--init",
            "--recursive",
            "--quiet",
            env=sub_env,
            timeout=NETWORK_TIMEOUT,
        )
    except git.GitCommandError as exc:
        raise stage_error(f"git submodule update failed: {first_error(exc, env)}") from exc
    count = len(git_out(root, "submodule", "status", "--recursive").splitlines())
    console.info(f"source: {count} submodules updated")


def _apply_diff(root: Path, diff: str, env: Mapping[str, str]) -> None:
    text = diff if diff.endswith("\n") else diff + "\n"
    patch = root.parent / PATCH_FILE
    patch.write_text(text, encoding="utf-8", newline="")
    strip = f"-p{patch_strip_level(text)}"
    try:
        git_out(root, "apply", "--whitespace=nowarn", strip, str(patch), env=env)
        return
    except git.GitCommandError as exc:
        first = first_error(exc, env)
    # The clearml SDK's Task.create adds its Task.init call as a hunk with no context lines
    # ("@@ -0,0 +1,4 @@"), which git apply refuses unless told to accept such hunks.
    with contextlib.suppress(git.GitCommandError):
        git_out(root, "apply", "--unidiff-zero", "--whitespace=nowarn", strip, str(patch), env=env)
        log.info("source.diff_unidiff_zero", first_attempt=first)
        return
    try:
        git_out(root, "apply", "--3way", "--whitespace=nowarn", strip, str(patch), env=env)
    except git.GitCommandError as exc:
        raise stage_error(f"applying the uncommitted diff failed: {first}") from exc
    # --3way stages what it applied; unstage so the tree looks like a plain apply.
    git_out(root, "reset", "--quiet", env=env)
    log.info("source.diff_3way", first_attempt=first)


def _locate(root: Path, req: SourceRequest) -> tuple[Path, Path]:
    """The working directory and entry point, checked to exist and to stay inside the root."""
    real_root = root.resolve()
    working_dir = req.working_dir or "."
    cwd = root / posixpath.normpath(working_dir)
    if not cwd.resolve().is_relative_to(real_root):
        raise stage_error(f"working directory {working_dir} points outside the checkout")
    if not cwd.is_dir():
        raise stage_error(f"working directory {working_dir} not found in the checkout")
    if not req.entry_point:
        return cwd, cwd
    entry = cwd / posixpath.normpath(req.entry_point)
    if not entry.resolve().is_relative_to(real_root):
        raise stage_error(f"entry point {req.entry_point} points outside the checkout")
    if not entry.is_file():
        raise stage_error(f"entry point {req.entry_point} not found in the checkout")
    return cwd, entry


def _count_files(diff: str) -> int:
    headers = sum(1 for line in diff.splitlines() if line.startswith("diff "))
    return headers or 1
