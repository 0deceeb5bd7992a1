"""What a task's source is, checked before any git runs (pure): the request and its validation,
URLs with credentials split off and masked, mirror names, revision candidates, patch levels.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

from agent.errors import StageError

MAX_HINT_CHARS = 1_000_000  # of a script read to see whether it imports clearml
STAGE = "source"
ALLOWED_SCHEMES = frozenset({"https", "http", "ssh", "git", "file", "git+ssh", "ssh+git"})
# Prefix pairs git writes in a diff header: default, and diff.mnemonicPrefix ones.
_DIFF_PREFIXES = frozenset({("a/", "b/"), ("i/", "w/"), ("c/", "w/"), ("c/", "i/"), ("o/", "w/")})
_HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_LIKE = re.compile(r"^(?:[^@/:\s]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:[^\s]+$")
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")
# git reads "<transport>::<address>" (URL scheme characters, then "::") as a remote helper
# (ext:: runs a command); "::" later in a URL (an IPv6 host) is not one.
_TRANSPORT_HELPER = re.compile(r"^[A-Za-z0-9+.-]*::")
_REF_FORBIDDEN = ("..", "@{", "~", "^", ":", "?", "*", "[", "\\")
_SLUG_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_MAX = 40
_HASH_LEN = 16


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
        return not self.repository and bool(self.diff) and not is_patch(self.diff)


@dataclass(frozen=True)
class SourceResult:
    root: Path  # the checkout (or the directory holding the literal script)
    cwd: Path  # root / working_dir
    entry_point: Path  # absolute path of the script (cwd when the request names none)
    commit: str  # resolved commit sha ("" for a literal script)
    cache_hit: bool


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
            raise stage_error(f"commit {req.commit!r} is not a commit id (4 to 64 hex digits)")
    working_dir = req.working_dir or "."
    check_relative("working directory", working_dir)
    if req.entry_point:  # relative to the working directory, which may be deeper than the root
        check_relative("entry point", req.entry_point, base=working_dir)


def validate_repository(url: str) -> None:
    if not url:
        return
    shown = mask_url(url)
    if _TRANSPORT_HELPER.match(url):
        raise stage_error(f"repository {shown!r} uses a git transport helper ('::'), refused")
    _check_plain("repository", url)
    scheme = URL_SCHEME.match(url)
    if scheme:
        if scheme.group(1).lower() not in ALLOWED_SCHEMES:
            raise stage_error(
                f"repository {shown!r} uses scheme {scheme.group(1)!r}; allowed: "
                + ", ".join(sorted(ALLOWED_SCHEMES))
            )
        host = _USERINFO.sub("", url)[scheme.end() :]
        if host.lstrip("[").startswith("-"):  # "[...]": an IPv6 literal, or a disguise
            raise stage_error(f"repository {shown!r} has a host starting with '-', refused")
        return
    if url.startswith("/") or _SCP_LIKE.match(url):
        return
    raise stage_error(
        f"repository {shown!r} is not a URL git can fetch safely "
        "(use https://, ssh://, git://, file://, user@host:path or an absolute path)"
    )


def _check_plain(what: str, value: str) -> None:
    if value.startswith("-"):
        raise stage_error(f"{what} {value!r} starts with '-', refused")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise stage_error(f"{what} {value!r} contains whitespace or control characters, refused")


def _check_ref(what: str, value: str) -> None:
    if not value:
        return
    _check_plain(what, value)
    bad = next((s for s in _REF_FORBIDDEN if s in value), None)
    if bad or value.endswith(("/", ".lock")) or value.startswith("/"):
        raise stage_error(f"{what} {value!r} is not a valid git ref name")


def check_relative(what: str, value: str, base: str = ".") -> None:
    if "\0" in value or any(ord(c) < 32 for c in value):
        raise stage_error(f"{what} {value!r} contains control characters, refused")
    if PurePosixPath(value).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", value):
        raise stage_error(f"{what} {value!r} must be a path relative to the repository")
    normal = posixpath.normpath(posixpath.join(base, value))
    if normal == ".." or normal.startswith("../"):
        raise stage_error(f"{what} {value!r} points outside the repository")


def mask_url(text: str) -> str:
    """Drop any ``user:password@`` from URLs in ``text`` (URLs, git messages)."""
    return _USERINFO.sub("", text)


def split_credentials(url: str) -> tuple[str, GitCredentials | None]:
    """``https://u:t@host/r.git`` → ``("https://host/r.git", GitCredentials("u", "t"))``."""
    if not URL_SCHEME.match(url):
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
    scheme = URL_SCHEME.match(url)
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


def is_patch(diff: str) -> bool:
    return diff.lstrip().startswith("diff ")


def stage_error(reason: str) -> StageError:
    return StageError(reason, stage=STAGE)
