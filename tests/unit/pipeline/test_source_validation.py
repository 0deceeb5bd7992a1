"""Pure parts of the source stage: validation, masking, naming, revision choice, diff prefixes."""

from __future__ import annotations

import pytest

from agent.errors import StageError
from agent.pipeline.source_request import (
    SourceRequest,
    describe_revision,
    mask_url,
    mirror_dir_name,
    normalise_url,
    patch_strip_level,
    revision_candidates,
    split_credentials,
    validate_repository,
    validate_request,
)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/repo.git",
        "http://host:8080/repo",
        "ssh://git@host:22/org/repo.git",
        "git://127.0.0.1:9418/repo.git",
        "file:///srv/git/repo.git",
        "git@github.com:org/repo.git",
        "host.example:org/repo.git",
        "/srv/git/repo.git",
        "https://user:token@host/repo.git",
    ],
)
def test_allowed_repositories(url: str) -> None:
    validate_repository(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ext::sh -c touch% /tmp/pwned", "transport helper"),
        ("fd::17", "transport helper"),
        ("https::evil", "transport helper"),
        ("--upload-pack=touch /tmp/x", "starts with '-'"),
        ("ftp://host/repo.git", "scheme 'ftp'"),
        ("ssh://-oProxyCommand=touch/repo", "host starting with '-'"),
        ("relative/path/repo", "not a URL git can fetch"),
        ("https://host/repo.git\n--upload-pack=x", "control characters"),
        ("-oProxyCommand=x:repo", "starts with '-'"),
    ],
)
def test_refused_repositories(url: str, why: str) -> None:
    with pytest.raises(StageError, match=why):
        validate_repository(url)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("branch", "--upload-pack=touch /tmp/x"),
        ("branch", "-b"),
        ("branch", "main..other"),
        ("branch", "ma in"),
        ("branch", "main\x00"),
        ("branch", "main@{1}"),
        ("branch", "refs/"),
        ("tag", "--exec=x"),
        ("tag", "v1~1"),
        ("tag", "v1.lock"),
        ("commit", "--all"),
        ("commit", "xyz123"),
        ("commit", "abc"),  # too short
        ("commit", "a" * 65),
        ("commit", "HEAD~1"),
    ],
)
def test_refused_refs(field: str, value: str) -> None:
    with pytest.raises(StageError):
        validate_request(SourceRequest(repository="https://h/r.git", **{field: value}))


def test_good_refs_pass() -> None:
    validate_request(
        SourceRequest(
            repository="https://h/r.git",
            commit="0123abcdEF",
            branch="feature/x-1.2",
            tag="v1.2.3",
            entry_point="src/train.py",
            working_dir="project",
        )
    )


@pytest.mark.parametrize(
    ("entry_point", "working_dir"),
    [
        ("../x.py", "."),
        ("/etc/passwd", "."),
        ("train.py", "/tmp"),
        ("train.py", ".."),
        ("../../x.py", "sub"),
        ("a/../../x.py", "."),
        ("C:\\x.py", "."),
    ],
)
def test_paths_escaping_the_checkout_are_refused(entry_point: str, working_dir: str) -> None:
    req = SourceRequest(
        repository="https://h/r.git", entry_point=entry_point, working_dir=working_dir
    )
    with pytest.raises(StageError, match=r"outside the repository|relative to the repository"):
        validate_request(req)


def test_paths_inside_the_checkout_pass() -> None:
    validate_request(
        SourceRequest(repository="/r.git", entry_point="../train.py", working_dir="sub")
    )
    validate_request(SourceRequest(repository="/r.git", entry_point="a/../b.py"))


def test_mask_url_drops_userinfo_everywhere() -> None:
    text = "fatal: unable to access 'https://me:s3cret@host/r.git/': nope; also http://tok@h/x"
    masked = mask_url(text)
    assert "s3cret" not in masked and "tok@" not in masked
    assert "https://host/r.git/" in masked and "http://h/x" in masked
    assert mask_url("git@github.com:org/repo.git") == "git@github.com:org/repo.git"


def test_split_credentials() -> None:
    url, creds = split_credentials("https://me:p%40ss@Host.example:8443/r.git")
    assert url == "https://host.example:8443/r.git"
    assert creds is not None and creds.username == "me" and creds.password == "p@ss"
    assert "p@ss" not in repr(creds)
    assert split_credentials("https://host/r.git") == ("https://host/r.git", None)
    assert split_credentials("git@host:r.git") == ("git@host:r.git", None)


def test_mirror_names_are_stable_readable_and_credential_free() -> None:
    a = mirror_dir_name("https://github.com/Org/Repo.git")
    assert a == mirror_dir_name("https://GitHub.com/Org/Repo/")
    assert a == mirror_dir_name("https://user:tok@github.com/Org/Repo.git")
    assert a.startswith("Org-Repo-") and a.endswith(".git")
    assert a != mirror_dir_name("https://github.com/Org/Other.git")
    assert mirror_dir_name("git@host:org/x.git").startswith("org-x-")
    assert normalise_url("https://u:p@H.com/a.git/") == "https://h.com/a"


def test_revision_candidates_prefer_commit_then_tag_then_branch() -> None:
    full = SourceRequest(repository="r", commit="abcd", tag="v1", branch="main")
    assert revision_candidates(full) == ["abcd^{commit}"]
    assert revision_candidates(SourceRequest(tag="v1", branch="main")) == ["refs/tags/v1^{commit}"]
    assert revision_candidates(SourceRequest(branch="main")) == [
        "refs/remotes/origin/main^{commit}"
    ]
    assert revision_candidates(SourceRequest(branch="origin/dev"))[-1] == (
        "refs/remotes/origin/dev^{commit}"
    )
    assert revision_candidates(SourceRequest()) == ["refs/remotes/origin/HEAD^{commit}"]
    assert describe_revision(SourceRequest(branch="dev")) == "branch dev"


def test_patch_strip_level() -> None:
    prefixed = "diff --git a/x.py b/x.py\nindex 1..2 100644\n--- a/x.py\n+++ b/x.py\n"
    bare = "diff --git x.py x.py\nindex 1..2 100644\n--- x.py\n+++ x.py\n"
    under_a = "diff --git a/x.py a/x.py\n--- a/x.py\n+++ a/x.py\n"
    mnemonic = "diff --git i/x.py w/x.py\n--- i/x.py\n+++ w/x.py\n"
    new_file = "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+x\n"
    assert patch_strip_level(prefixed) == 1
    assert patch_strip_level(bare) == 0
    assert patch_strip_level(under_a) == 0
    assert patch_strip_level(mnemonic) == 1
    assert patch_strip_level(new_file) == 1
    assert patch_strip_level("--- /dev/null\n+++ new.py\n") == 0


def test_literal_script_detection() -> None:
    assert SourceRequest(diff="print('hi')\n").is_literal_script
    assert not SourceRequest(diff="diff --git a/x b/x\n").is_literal_script
    assert not SourceRequest(repository="/r.git", diff="print(1)").is_literal_script
    assert not SourceRequest().is_literal_script
