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
import hashlib
import os
import posixpath
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

import filelock
import git
import structlog

from agent.errors import StageError
from agent.pipeline.console import Console

log = structlog.get_logger()
MAX_HINT_CHARS = 1_000_000  # of a script read to see whether it imports clearml

STAGE = "source"
SRC_DIR = "src"
DEFAULT_SCRIPT_NAME = "script.py"
PATCH_FILE = "uncommitted.diff"  # written in the task dir, outside the checkout
SHORT_SHA = 7
NETWORK_TIMEOUT = 1800.0  # seconds: a fetch or submodule update of a big repository
LOCAL_TIMEOUT = 600.0  # seconds: clone from the mirror, checkout, apply
LOCK_TIMEOUT = 3600.0  # seconds another task may hold a mirror (its first fetch)

ALLOWED_SCHEMES = frozenset({"https", "http", "ssh", "git", "file", "git+ssh", "ssh+git"})
# Prefix pairs git writes in a diff header: default, and diff.mnemonicPrefix ones.
_DIFF_PREFIXES = frozenset({("a/", "b/"), ("i/", "w/"), ("c/", "w/"), ("c/", "i/"), ("o/", "w/")})
_HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_LIKE = re.compile(r"^(?:[^@/:\s]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:[^\s]+$")
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")
# git reads "<transport>::<address>" (URL scheme characters, then "::") as a remote helper
# (ext:: runs a command); "::" later in a URL (an IPv6 host) is not one.
_TRANSPORT_HELPER = re.compile(r"^[A-Za-z0-9+.-]*::")
_REF_FORBIDDEN = ("..", "@{", "~", "^", ":", "?", "*", "[", "\\")
_SLUG_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_MAX = 40
_HASH_LEN = 16

_ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$CONVEYOR_GIT_USERNAME" ;;
  *) printf '%s\\n' "$CONVEYOR_GIT_PASSWORD" ;;
esac
"""
_DEFAULT_SSH_COMMAND = "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new"


@dataclass(frozen=True)
class GitCredentials:
    username: str
    password: str  # a token, usually

    def __repr__(self) -> str:  # keep the token out of tracebacks and logs
        return f"GitCredentials(username={self.username!r}, password='****')"


@dataclass(frozen=True)
class SourceRequest:
    repository: str = ""  # URL or absolute local path; empty: a literal script (or nothing)
    commit: str = ""  # version_num
    branch: str = ""
    tag: str = ""
    diff: str = ""  # the uncommitted diff or, for a literal script, the script's text
    entry_point: str = ""  # relative to working_dir; empty: none (module entry points)
    working_dir: str = "."
    submodules: bool = True

    @property
    def is_literal_script(self) -> bool:
        return not self.repository and bool(self.diff) and not _is_patch(self.diff)


@dataclass(frozen=True)
class SourceResult:
    root: Path  # the checkout (or the directory holding the literal script)
    cwd: Path  # root / working_dir
    entry_point: Path  # absolute path of the script (cwd when the request names none)
    commit: str  # resolved commit sha ("" for a literal script)
    cache_hit: bool


# --- pure: validation, masking, naming -------------------------------------------------------


def sdk_hints(result: SourceResult) -> tuple[str, str]:
    """The entry point's text and the repository's requirements.txt, as far as they exist:
    what tells whether the script applies its own parameters through the clearml SDK."""

    def text(path: Path) -> str:
        try:
            with path.open(errors="replace") as fh:
                return fh.read(MAX_HINT_CHARS)
        except OSError:
            return ""

    return text(result.entry_point), text(result.root / "requirements.txt")


def validate_request(req: SourceRequest) -> None:
    """Refuse values that could be read as git options, escape the checkout or run commands."""
    validate_repository(req.repository)
    for what, value in (("branch", req.branch), ("tag", req.tag)):
        _check_ref(what, value)
    if req.commit:
        _check_plain("commit", req.commit)
        if not _HEX.match(req.commit):
            raise _error(f"commit {req.commit!r} is not a commit id (4 to 64 hex digits)")
    working_dir = req.working_dir or "."
    _check_relative("working directory", working_dir)
    if req.entry_point:  # relative to the working directory, which may be deeper than the root
        _check_relative("entry point", req.entry_point, base=working_dir)


def validate_repository(url: str) -> None:
    if not url:
        return
    shown = mask_url(url)
    if _TRANSPORT_HELPER.match(url):
        raise _error(f"repository {shown!r} uses a git transport helper ('::'), refused")
    _check_plain("repository", url)
    scheme = _SCHEME.match(url)
    if scheme:
        if scheme.group(1).lower() not in ALLOWED_SCHEMES:
            raise _error(
                f"repository {shown!r} uses scheme {scheme.group(1)!r}; allowed: "
                + ", ".join(sorted(ALLOWED_SCHEMES))
            )
        host = _USERINFO.sub("", url)[scheme.end() :]
        if host.lstrip("[").startswith("-"):  # "[...]": an IPv6 literal, or a disguise
            raise _error(f"repository {shown!r} has a host starting with '-', refused")
        return
    if url.startswith("/") or _SCP_LIKE.match(url):
        return
    raise _error(
        f"repository {shown!r} is not a URL git can fetch safely "
        "(use https://, ssh://, git://, file://, user@host:path or an absolute path)"
    )


def _check_plain(what: str, value: str) -> None:
    if value.startswith("-"):
        raise _error(f"{what} {value!r} starts with '-', refused")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise _error(f"{what} {value!r} contains whitespace or control characters, refused")


def _check_ref(what: str, value: str) -> None:
    if not value:
        return
    _check_plain(what, value)
    bad = next((s for s in _REF_FORBIDDEN if s in value), None)
    if bad or value.endswith(("/", ".lock")) or value.startswith("/"):
        raise _error(f"{what} {value!r} is not a valid git ref name")


def _check_relative(what: str, value: str, base: str = ".") -> None:
    if "\0" in value or any(ord(c) < 32 for c in value):
        raise _error(f"{what} {value!r} contains control characters, refused")
    if PurePosixPath(value).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", value):
        raise _error(f"{what} {value!r} must be a path relative to the repository")
    normal = posixpath.normpath(posixpath.join(base, value))
    if normal == ".." or normal.startswith("../"):
        raise _error(f"{what} {value!r} points outside the repository")


def mask_url(text: str) -> str:
    """Drop any ``user:password@`` from URLs in ``text`` (URLs, git messages)."""
    return _USERINFO.sub("", text)


def split_credentials(url: str) -> tuple[str, GitCredentials | None]:
    """``https://u:t@host/r.git`` → ``("https://host/r.git", GitCredentials("u", "t"))``."""
    if not _SCHEME.match(url):
        return url, None
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, GitCredentials(unquote(parts.username or ""), unquote(parts.password))


def normalise_url(url: str) -> str:
    """One spelling per repository: no credentials, lower-case host, no trailing ``/`` or .git."""
    url = mask_url(url).rstrip("/")
    url = url.removesuffix(".git")
    scheme = _SCHEME.match(url)
    if scheme:
        parts = urlsplit(url)
        url = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))
    return url


def mirror_dir_name(url: str) -> str:
    """``github.com/org/repo`` → ``org-repo-<16 hex>.git``: readable and collision-free."""
    normal = normalise_url(url)
    digest = hashlib.sha256(normal.encode()).hexdigest()[:_HASH_LEN]
    tail = [p for p in re.split(r"[/:]", normal) if p][-2:]
    slug = _SLUG_CHARS.sub("-", "-".join(tail)).strip("-.")[:_SLUG_MAX] or "repo"
    return f"{slug}-{digest}.git"


def revision_candidates(req: SourceRequest) -> list[str]:
    """What to resolve in the mirror, in order: commit, else tag, else branch, else HEAD."""
    if req.commit:
        return [f"{req.commit}^{{commit}}"]
    if req.tag:
        return [f"refs/tags/{req.tag}^{{commit}}"]
    if req.branch:
        out = [f"refs/remotes/origin/{req.branch}^{{commit}}"]
        if req.branch.startswith("origin/"):
            out.append(f"refs/remotes/{req.branch}^{{commit}}")
        return out
    return ["refs/remotes/origin/HEAD^{commit}"]


def describe_revision(req: SourceRequest) -> str:
    if req.commit:
        return f"commit {req.commit}"
    if req.tag:
        return f"tag {req.tag}"
    if req.branch:
        return f"branch {req.branch}"
    return "the default branch"


def patch_strip_level(diff: str) -> int:
    """1 for ``a/``/``b/`` prefixed diffs (``git diff``), 0 for ``--no-prefix`` ones."""
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            paths = line[len("diff --git ") :].replace('"', "").split(" ")
            if len(paths) == 2:
                return 1 if (paths[0][:2], paths[1][:2]) in _DIFF_PREFIXES else 0
        if line.startswith("--- ") and not line.startswith("--- /dev/null"):
            return 1 if line[4:].lstrip('"')[:2] in {a for a, _ in _DIFF_PREFIXES} else 0
        if line.startswith("+++ ") and not line.startswith("+++ /dev/null"):
            return 1 if line[4:].lstrip('"')[:2] in {b for _, b in _DIFF_PREFIXES} else 0
    return 1


def _is_patch(diff: str) -> bool:
    return diff.lstrip().startswith("diff ")


def _error(reason: str) -> StageError:
    return StageError(reason, stage=STAGE)


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
        raise _error("task has no repository and no script: nothing to check out")
    url, url_credentials = split_credentials(req.repository)
    shown = mask_url(url)
    try:
        with _git_env(credentials or url_credentials) as env:
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
        raise _error(f"git failed: {_first_error(exc, {})}") from exc
    except OSError as exc:
        raise _error(f"could not write the checkout in {root}: {exc}") from exc
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
    _check_relative("entry point", name)
    _remove(root)
    cwd = root / posixpath.normpath(req.working_dir or ".")
    path = cwd / posixpath.normpath(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(req.diff, encoding="utf-8")
    except OSError as exc:
        raise _error(f"could not write the task's script {name}: {exc}") from exc
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
                raise _error(
                    f"git checkout failed: {describe_revision(req)} not found in {mask_url(url)}"
                )
            _remove(root)
            root.parent.mkdir(parents=True, exist_ok=True)
            _git_run(
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
        raise _error(
            f"git mirror of {mask_url(url)} stayed locked by another task for {LOCK_TIMEOUT:.0f} s"
        ) from exc
    return commit, cache_hit


def _open_mirror(mirror: Path, url: str) -> None:
    """Create the bare mirror on first use (atomically, by rename); keep its URL current."""
    if (mirror / "HEAD").is_file():
        try:
            if _git_out(mirror, "config", "--get", "remote.origin.url") != url:
                _git_out(mirror, "remote", "set-url", "origin", url)
            return
        except git.GitCommandError as exc:  # damaged (e.g. a crash mid-write): start over
            log.warning("source.mirror_rebuilt", mirror=str(mirror), error=_first_error(exc, {}))
    _remove(mirror)
    staging = Path(tempfile.mkdtemp(prefix=f"{mirror.name}.", dir=mirror.parent))
    try:
        git.Repo.init(str(staging), bare=True)
        _git_run(staging, "remote", "add", "origin", url, env={}, what="configuring")
        _git_run(
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
        _remove(staging)


def _fetch(mirror: Path, url: str, env: Mapping[str, str], *, default_branch: bool) -> None:
    try:
        _git_out(mirror, "fetch", "--quiet", "--prune", "origin", env=env, timeout=NETWORK_TIMEOUT)
        if default_branch:
            _git_out(
                mirror, "remote", "set-head", "origin", "--auto", env=env, timeout=NETWORK_TIMEOUT
            )
    except git.GitCommandError as exc:
        raise _error(f"git fetch failed for {mask_url(url)}: {_first_error(exc, env)}") from exc


def _resolve(mirror: Path, req: SourceRequest) -> str | None:
    for spec in revision_candidates(req):
        try:
            return _git_out(mirror, "rev-parse", "--verify", "--quiet", spec)
        except git.GitCommandError:
            continue
    return None


def _checkout(root: Path, url: str, commit: str, branch: str, env: Mapping[str, str]) -> None:
    """Point ``origin`` at the real repository (the task's SDK records it), then check out."""
    _git_run(root, "remote", "set-url", "origin", url, env=env, what="configuring the checkout")
    target = ["-B", branch, commit] if branch else ["--detach", commit]
    _git_run(
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
    if not _SCHEME.match(url) or url.lower().startswith("file://"):
        # A local parent may have local submodules; git refuses file:// in submodules by
        # default (CVE-2022-39253), which is right for remote parents only.
        _add_config(sub_env, "protocol.file.allow", "always")
    try:
        _git_out(
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
        raise _error(f"git submodule update failed: {_first_error(exc, env)}") from exc
    count = len(_git_out(root, "submodule", "status", "--recursive").splitlines())
    console.info(f"source: {count} submodules updated")


def _apply_diff(root: Path, diff: str, env: Mapping[str, str]) -> None:
    text = diff if diff.endswith("\n") else diff + "\n"
    patch = root.parent / PATCH_FILE
    patch.write_text(text, encoding="utf-8", newline="")
    strip = f"-p{patch_strip_level(text)}"
    try:
        _git_out(root, "apply", "--whitespace=nowarn", strip, str(patch), env=env)
        return
    except git.GitCommandError as exc:
        first = _first_error(exc, env)
    # The clearml SDK's Task.create adds its Task.init call as a hunk with no context lines
    # ("@@ -0,0 +1,4 @@"), which git apply refuses unless told to accept such hunks.
    with contextlib.suppress(git.GitCommandError):
        _git_out(root, "apply", "--unidiff-zero", "--whitespace=nowarn", strip, str(patch), env=env)
        log.info("source.diff_unidiff_zero", first_attempt=first)
        return
    try:
        _git_out(root, "apply", "--3way", "--whitespace=nowarn", strip, str(patch), env=env)
    except git.GitCommandError as exc:
        raise _error(f"applying the uncommitted diff failed: {first}") from exc
    # --3way stages what it applied; unstage so the tree looks like a plain apply.
    _git_out(root, "reset", "--quiet", env=env)
    log.info("source.diff_3way", first_attempt=first)


def _locate(root: Path, req: SourceRequest) -> tuple[Path, Path]:
    """The working directory and entry point, checked to exist and to stay inside the root."""
    real_root = root.resolve()
    working_dir = req.working_dir or "."
    cwd = root / posixpath.normpath(working_dir)
    if not cwd.resolve().is_relative_to(real_root):
        raise _error(f"working directory {working_dir} points outside the checkout")
    if not cwd.is_dir():
        raise _error(f"working directory {working_dir} not found in the checkout")
    if not req.entry_point:
        return cwd, cwd
    entry = cwd / posixpath.normpath(req.entry_point)
    if not entry.resolve().is_relative_to(real_root):
        raise _error(f"entry point {req.entry_point} points outside the checkout")
    if not entry.is_file():
        raise _error(f"entry point {req.entry_point} not found in the checkout")
    return cwd, entry


def _count_files(diff: str) -> int:
    headers = sum(1 for line in diff.splitlines() if line.startswith("diff "))
    return headers or 1


# --- git plumbing ------------------------------------------------------------------------


@contextlib.contextmanager
def _git_env(credentials: GitCredentials | None) -> Iterator[dict[str, str]]:
    """Environment for every git command; with credentials, a private askpass script."""
    # Continue after any -c settings the operator passes through GIT_CONFIG_COUNT.
    inherited = os.environ.get("GIT_CONFIG_COUNT", "0")
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": inherited if inherited.isdigit() else "0",
    }
    _add_config(env, "protocol.ext.allow", "never")
    if not (os.environ.get("GIT_SSH_COMMAND") or os.environ.get("GIT_SSH")):
        env["GIT_SSH_COMMAND"] = _DEFAULT_SSH_COMMAND
    if credentials is None:
        yield env
        return
    private = Path(tempfile.mkdtemp(prefix="conveyor-askpass-"))  # mode 0700
    try:
        script = private / "askpass.sh"
        script.write_text(_ASKPASS_SCRIPT, encoding="utf-8")
        script.chmod(stat.S_IRWXU)
        env["GIT_ASKPASS"] = str(script)
        env["CONVEYOR_GIT_USERNAME"] = credentials.username
        env["CONVEYOR_GIT_PASSWORD"] = credentials.password
        _add_config(env, "credential.helper", "")  # no helper may store or override them
        yield env
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _add_config(env: dict[str, str], key: str, value: str) -> None:
    """Pass one ``-c key=value`` through the environment (git >= 2.31)."""
    index = int(env.get("GIT_CONFIG_COUNT", "0"))
    env[f"GIT_CONFIG_KEY_{index}"] = key
    env[f"GIT_CONFIG_VALUE_{index}"] = value
    env["GIT_CONFIG_COUNT"] = str(index + 1)


def _git_out(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = LOCAL_TIMEOUT
) -> str:
    """Run ``git args`` in ``cwd``; stdout stripped; GitCommandError on failure."""
    try:
        out = git.Git(str(cwd)).execute(
            ["git", *args], env=dict(env or {}), kill_after_timeout=timeout
        )
    except git.GitCommandNotFound as exc:
        raise _error("git is not installed on this agent (the git command was not found)") from exc
    return str(out).strip()


def _git_run(cwd: Path, *args: str, env: Mapping[str, str], what: str) -> None:
    """Like :func:`_git_out` for local steps whose failure ends the stage."""
    try:
        _git_out(cwd, *args, env=env)
    except git.GitCommandError as exc:
        raise _error(f"{what} failed: {_first_error(exc, env)}") from exc


def _first_error(exc: git.GitCommandError, env: Mapping[str, str]) -> str:
    """git's first ``fatal:``/``error:`` line (else its first line), credentials masked."""
    raw = str(exc.stderr or "")
    raw = re.sub(r"^\s*stderr: '", "", raw).rstrip().removesuffix("'")
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    chosen = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), None)
    text = chosen or (lines[0] if lines else f"git exited with status {exc.status}")
    secret = env.get("CONVEYOR_GIT_PASSWORD", "")
    if secret:
        text = text.replace(secret, "****")
    return mask_url(text)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
