"""The source stage against real git repositories (file://, git daemon, smart HTTP with auth)."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gitservers import (
    HTTP_TOKEN,
    HTTP_USER,
    HttpGit,
    Origin,
    commit_all,
    git,
    make_origin,
    numbered,
)

from agent.errors import StageError
from agent.pipeline.console import ListConsole
from agent.pipeline.source import prepare_source
from agent.pipeline.source_request import (
    GitCredentials,
    SourceRequest,
    SourceResult,
    mirror_dir_name,
)


def _prepare(
    req: SourceRequest,
    tmp: Path,
    task: str = "task",
    credentials: GitCredentials | None = None,
) -> tuple[SourceResult, ListConsole]:
    console = ListConsole()
    result = prepare_source(
        req,
        task_dir=tmp / task,
        mirror_root=tmp / "mirrors",
        console=console,
        credentials=credentials,
    )
    return result, console


def test_checkout_by_commit_tag_branch_and_default(origin: Origin, tmp_path: Path) -> None:
    cases = {
        "commit": (SourceRequest(repository=origin.url, commit=origin.c1), origin.c1, "v1"),
        "tag": (SourceRequest(repository=origin.url, tag="v1"), origin.c1, "v1"),
        "branch": (SourceRequest(repository=origin.url, branch="feature"), origin.c3, "feature"),
        "default": (SourceRequest(repository=origin.url), origin.c2, "v2"),
    }
    for name, (req, sha, printed) in cases.items():
        result, _ = _prepare(req, tmp_path, task=name)
        assert result.commit == sha, name
        assert (result.root / "train.py").read_text() == f"print('{printed}')\n", name
        assert git(result.root, "rev-parse", "HEAD") == sha
        # the task's SDK records the real repository, not the mirror
        assert git(result.root, "remote", "get-url", "origin") == origin.url
    branch_root = tmp_path / "branch" / "src"
    assert git(branch_root, "rev-parse", "--abbrev-ref", "HEAD") == "feature"


def test_entry_point_and_working_dir(origin: Origin, tmp_path: Path) -> None:
    req = SourceRequest(
        repository=origin.url, commit=origin.c2, entry_point="tool.py", working_dir="sub"
    )
    result, _ = _prepare(req, tmp_path)
    assert result.cwd == result.root / "sub"
    assert result.entry_point == result.root / "sub" / "tool.py"
    assert result.entry_point.is_absolute() and result.entry_point.is_file()


def test_second_prepare_is_a_cache_hit_and_a_new_commit_is_fetched(
    origin: Origin, tmp_path: Path
) -> None:
    req = SourceRequest(repository=origin.url, commit=origin.c2, entry_point="train.py")
    first, console1 = _prepare(req, tmp_path, task="t1")
    second, console2 = _prepare(req, tmp_path, task="t2")
    assert not first.cache_hit and "(fetched," in console1.text()
    assert second.cache_hit and f"@ {origin.c2[:7]} (cache hit," in console2.text()
    assert second.root != first.root and (second.root / "train.py").is_file()
    # a commit pushed after the mirror was made: a miss, fetched, found
    work = tmp_path / "pusher"
    git(tmp_path, "clone", "-q", str(origin.bare), str(work))
    (work / "new.py").write_text("x = 1\n")
    new = commit_all(work, "new")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/later")
    third, _ = _prepare(SourceRequest(repository=origin.url, commit=new[:10]), tmp_path, "t3")
    assert not third.cache_hit and third.commit == new and (third.root / "new.py").is_file()
    assert len(list((tmp_path / "mirrors").glob("*.git"))) == 1


def test_missing_commit_and_branch_have_clear_reasons(origin: Origin, tmp_path: Path) -> None:
    with pytest.raises(StageError) as err:
        _prepare(SourceRequest(repository=origin.url, commit="deadbeef" * 5), tmp_path)
    assert err.value.reason == (
        f"git checkout failed: commit {'deadbeef' * 5} not found in {origin.url}"
    )
    with pytest.raises(StageError, match="branch nope not found in file://"):
        _prepare(SourceRequest(repository=origin.url, branch="nope"), tmp_path)


def test_missing_entry_point_and_working_dir(origin: Origin, tmp_path: Path) -> None:
    with pytest.raises(StageError) as err:
        _prepare(SourceRequest(repository=origin.url, entry_point="nope.py"), tmp_path)
    assert err.value.reason == "entry point nope.py not found in the checkout"
    with pytest.raises(StageError, match="working directory gone not found"):
        _prepare(SourceRequest(repository=origin.url, working_dir="gone"), tmp_path)


def _diff(work: Path, origin: Origin, *args: str) -> str:
    return git(work, "diff", *args) + "\n"


def test_uncommitted_diffs_apply(origin: Origin, fresh_clone: Path, tmp_path: Path) -> None:
    work = fresh_clone
    (work / "train.py").write_text("print('patched')\n")
    normal = _diff(work, origin)
    no_prefix = _diff(work, origin, "--no-prefix")
    (work / "data.bin").write_bytes(bytes(range(255, -1, -1)) * 4)
    binary = _diff(work, origin, "--binary")
    assert "GIT binary patch" in binary and "diff --git train.py train.py" in no_prefix
    for name, diff in {"normal": normal, "noprefix": no_prefix, "binary": binary}.items():
        req = SourceRequest(repository=origin.url, commit=origin.c2, diff=diff)
        result, console = _prepare(req, tmp_path, task=name)
        assert (result.root / "train.py").read_text() == "print('patched')\n", name
        assert "applied the uncommitted diff" in console.text()
    assert (tmp_path / "binary" / "src" / "data.bin").read_bytes() == bytes(range(255, -1, -1)) * 4
    # the applied diff is left uncommitted, as the task's SDK expects to find it
    status = git(tmp_path / "normal" / "src", "status", "--porcelain")
    assert status == "M train.py"


def test_diff_falls_back_to_three_way_merge(
    origin: Origin, fresh_clone: Path, tmp_path: Path
) -> None:
    # A diff made on main (c2), whose context includes line 4 as changed on main, checked out
    # at c1 where line 4 differs: a plain apply fails, a 3-way merge applies it cleanly.
    work = fresh_clone
    (work / "notes.txt").write_text(
        numbered(12, {4: "line 4 changed on main", 7: "line 7 from the diff"})
    )
    diff = _diff(work, origin)
    req = SourceRequest(repository=origin.url, commit=origin.c1, diff=diff)
    result, _ = _prepare(req, tmp_path)
    assert (result.root / "notes.txt").read_text() == numbered(12, {7: "line 7 from the diff"})
    assert git(result.root, "diff", "--cached") == ""  # nothing left staged


def test_bad_diff_fails_with_gits_reason(origin: Origin, tmp_path: Path) -> None:
    diff = (
        "diff --git a/train.py b/train.py\n"
        "index 0000001..0000002 100644\n"
        "--- a/train.py\n+++ b/train.py\n"
        "@@ -1 +1 @@\n-print('not what is there')\n+print('x')\n"
    )
    with pytest.raises(StageError) as err:
        _prepare(SourceRequest(repository=origin.url, commit=origin.c2, diff=diff), tmp_path)
    assert err.value.reason.startswith("applying the uncommitted diff failed: error: ")
    assert "train.py" in err.value.reason


def test_injection_attempts_are_refused_before_git_runs(origin: Origin, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    attempts = [
        SourceRequest(repository=origin.url, branch=f"--upload-pack=touch {marker}"),
        SourceRequest(repository=f"ext::sh -c touch% {marker}"),
        SourceRequest(repository=origin.url, entry_point="../../etc/passwd"),
        SourceRequest(repository=origin.url, commit=f"--output={marker}"),
    ]
    for req in attempts:
        with pytest.raises(StageError):
            _prepare(req, tmp_path)
    assert not marker.exists()
    assert not (tmp_path / "mirrors").exists()


def test_symlinked_entry_point_leaving_the_checkout_is_refused(
    origin: Origin, fresh_clone: Path, tmp_path: Path
) -> None:
    (fresh_clone / "escape.py").symlink_to("/etc/hostname")
    git(fresh_clone, "add", "escape.py")
    diff = git(fresh_clone, "diff", "--cached", "--binary") + "\n"
    req = SourceRequest(repository=origin.url, commit=origin.c2, diff=diff, entry_point="escape.py")
    with pytest.raises(StageError, match="points outside the checkout"):
        _prepare(req, tmp_path)


def _askpass_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("conveyor-askpass-*"))


def test_credentials_never_reach_errors_or_console(tmp_path: Path) -> None:
    before = _askpass_dirs()
    secret = "tok-never-print-me-123"
    requests = [
        (SourceRequest(repository=f"https://user:{secret}@127.0.0.1:1/repo.git"), None),
        (SourceRequest(repository="https://127.0.0.1:1/repo.git"), GitCredentials("u", secret)),
    ]
    for req, creds in requests:
        console = ListConsole()
        with pytest.raises(StageError) as err:
            prepare_source(
                req,
                task_dir=tmp_path / "t",
                mirror_root=tmp_path / "m",
                console=console,
                credentials=creds,
            )
        assert err.value.reason.startswith("git fetch failed for https://127.0.0.1:1/repo.git: ")
        assert secret not in err.value.reason and secret not in str(err.value)
        assert secret not in console.text()
    # nothing on disk either: not in the mirror's config, and the askpass dir is gone
    for config in (tmp_path / "m").glob("*.git/config"):
        assert secret not in config.read_text()
    assert _askpass_dirs() == before


def test_private_http_repository_with_token(
    origin: Origin, http_git: HttpGit, tmp_path: Path
) -> None:
    url = f"{http_git.base_url}{origin.bare.name}"
    with pytest.raises(StageError, match=r"git fetch failed for http://127\.0\.0\.1"):
        _prepare(SourceRequest(repository=url, commit=origin.c1), tmp_path, task="anon")
    creds = GitCredentials(HTTP_USER, HTTP_TOKEN)
    result, console = _prepare(
        SourceRequest(repository=url, commit=origin.c1), tmp_path, credentials=creds
    )
    assert result.commit == origin.c1 and (result.root / "train.py").read_text() == "print('v1')\n"
    assert any(h.startswith("Basic ") for h in http_git.seen_authorization)
    assert HTTP_TOKEN not in console.text()
    mirror = tmp_path / "mirrors" / mirror_dir_name(url)
    assert HTTP_TOKEN not in (mirror / "config").read_text()
    assert HTTP_TOKEN not in (result.root / ".git" / "config").read_text()
    # token in the URL: used for the fetch, never stored or shown
    token_url = url.replace("http://", f"http://{HTTP_USER}:{HTTP_TOKEN}@")
    result2, console2 = _prepare(
        SourceRequest(repository=token_url, branch="feature"), tmp_path, "t2"
    )
    assert result2.commit == origin.c3 and HTTP_TOKEN not in console2.text()
    assert HTTP_TOKEN not in (mirror / "config").read_text()


def test_git_daemon_protocol(origin: Origin, git_daemon: str, tmp_path: Path) -> None:
    url = f"{git_daemon}{origin.bare.name}"
    result, console = _prepare(SourceRequest(repository=url, tag="v1"), tmp_path)
    assert result.commit == origin.c1
    assert f"source: {url} @ {origin.c1[:7]} (fetched" in console.text()


def test_literal_script_needs_no_git(tmp_path: Path) -> None:
    script = "import sys\nprint('literal', sys.argv)\n"
    req = SourceRequest(diff=script, entry_point="run_me.py")
    result, console = _prepare(req, tmp_path)
    assert result.entry_point == tmp_path / "task" / "src" / "run_me.py"
    assert result.entry_point.read_text() == script
    assert result.commit == "" and not result.cache_hit
    assert not (tmp_path / "mirrors").exists()
    assert "literal script run_me.py (2 lines)" in console.text()
    default, _ = _prepare(SourceRequest(diff=script), tmp_path, task="t2")
    assert default.entry_point.name == "script.py"


def test_submodules_are_checked_out(origin: Origin, tmp_path: Path) -> None:
    lib = make_origin(tmp_path, "lib.git")
    parent = make_origin(tmp_path, "parent.git")
    work = parent.work
    git(work, "submodule", "add", "-q", lib.url, "vendor/lib")
    sha = commit_all(work, "add submodule")
    git(work, "push", "-q", "origin", "HEAD:main")
    result, console = _prepare(SourceRequest(repository=parent.url, commit=sha), tmp_path)
    assert (result.root / "vendor" / "lib" / "train.py").read_text() == "print('v2')\n"
    assert "1 submodules updated" in console.text()
    no_subs, _ = _prepare(
        SourceRequest(repository=parent.url, commit=sha, submodules=False), tmp_path, "t2"
    )
    assert not (no_subs.root / "vendor" / "lib" / "train.py").exists()


def test_concurrent_tasks_share_one_mirror_safely(origin: Origin, tmp_path: Path) -> None:
    req = SourceRequest(repository=origin.url, branch="feature", entry_point="train.py")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(_prepare, req, tmp_path, f"t{i}") for i in range(4)]
        results = [f.result(timeout=60)[0] for f in futures]
    assert {r.commit for r in results} == {origin.c3}
    assert all(r.entry_point.read_text() == "print('feature')\n" for r in results)
    assert len(list((tmp_path / "mirrors").glob("*.git"))) == 1


def test_a_damaged_mirror_is_rebuilt(origin: Origin, tmp_path: Path) -> None:
    req = SourceRequest(repository=origin.url, commit=origin.c1)
    _prepare(req, tmp_path, "t1")
    (mirror,) = (tmp_path / "mirrors").glob("*.git")
    (mirror / "config").write_text("[this is not git config\n")
    result, _ = _prepare(req, tmp_path, "t2")
    assert result.commit == origin.c1 and not result.cache_hit
    assert git(mirror, "config", "--get", "remote.origin.url") == origin.url
