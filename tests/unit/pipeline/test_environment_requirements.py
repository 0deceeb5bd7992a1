"""Pure parts of the environment stage: requirement filtering, cache keys, interpreter specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import StageError
from agent.pipeline.interpreters import PythonSpec, candidate_names, parse_spec, uv_error_summary
from agent.pipeline.requirements import (
    WHY_LOCAL_FILE,
    WHY_LOCAL_PATH,
    WHY_OUTSIDE,
    WHY_PHANTOM,
    count_frozen,
    filter_requirements,
    resolution_key,
)

CLEARML_RECORDED = """\
# Python 3.11.7 (main, Dec  8 2023, 18:56:58) [GCC 11.4.0]
# Detailed import analysis
# **************************
clearml == 1.14.4
numpy==1.26.4  # used by train.py
torch @ file:///home/me/wheels/torch-2.3.1-cp311-linux_x86_64.whl
mylib @ file:///home/me/src/mylib
file:///home/me/other
-e /home/me/src/editable_pkg
-e git+https://github.com/org/repo.git@abc#egg=repo
pkg-resources==0.0.0
--extra-index-url https://download.pytorch.org/whl/cu121
requests[socks]>=2 ; python_version >= "3.8"
pandas \\
    ==2.2.0
"""


def test_clearml_recorded_requirements_are_made_installable() -> None:
    reqs = filter_requirements(CLEARML_RECORDED)
    assert reqs.lines == (
        "clearml == 1.14.4",
        "numpy==1.26.4",
        "-e git+https://github.com/org/repo.git@abc#egg=repo",
        "--extra-index-url https://download.pytorch.org/whl/cu121",
        'requests[socks]>=2 ; python_version >= "3.8"',
        "pandas ==2.2.0",
    )
    skipped = dict(reqs.skipped)
    assert skipped["torch @ file:///home/me/wheels/torch-2.3.1-cp311-linux_x86_64.whl"] == (
        WHY_LOCAL_FILE
    )
    assert skipped["mylib @ file:///home/me/src/mylib"] == WHY_LOCAL_FILE
    assert skipped["file:///home/me/other"] == WHY_LOCAL_FILE
    assert skipped["-e /home/me/src/editable_pkg"] == WHY_LOCAL_PATH
    assert skipped["pkg-resources==0.0.0"] == WHY_PHANTOM
    assert reqs.packages == 5  # the option line is not a package
    assert reqs.text.endswith("pandas ==2.2.0\n")


def test_paths_in_a_checkouts_requirements_become_absolute() -> None:
    base = Path("/work/t1/src")
    text = "-r base.txt\n-e .\n./libs/a\nb @ file:./libs/b\n-c ../outside.txt\n/etc/x\nsix\n"
    reqs = filter_requirements(text, base_dir=base)
    assert reqs.lines == (
        "-r /work/t1/src/base.txt",
        "-e /work/t1/src",
        "/work/t1/src/libs/a",
        "b @ /work/t1/src/libs/b",
        "six",
    )
    assert dict(reqs.skipped) == {"-c ../outside.txt": WHY_OUTSIDE, "/etc/x": WHY_OUTSIDE}


def test_without_a_checkout_relative_paths_are_skipped() -> None:
    reqs = filter_requirements("-r base.txt\n-e .\nsix\n")
    assert reqs.lines == ("six",)
    assert len(reqs.skipped) == 2


def test_empty_and_comment_only_requirements_are_falsy() -> None:
    assert not filter_requirements("")
    assert not filter_requirements("# Python 3.11\n\n   \n")
    assert not filter_requirements("--extra-index-url https://x/simple\n")
    assert filter_requirements("six")


def test_resolution_key_depends_on_python_text_platform_and_index() -> None:
    base = resolution_key("3.11.7", "six\n", "linux-x86_64-glibc2.36")
    assert base == resolution_key("3.11.7", "six\n", "linux-x86_64-glibc2.36")
    assert base != resolution_key("3.11.8", "six\n", "linux-x86_64-glibc2.36")
    assert base != resolution_key("3.11.7", "six\nidna\n", "linux-x86_64-glibc2.36")
    assert base != resolution_key("3.11.7", "six\n", "linux-aarch64-glibc2.36")
    assert base != resolution_key("3.11.7", "six\n", "linux-x86_64-glibc2.36", installer="pip")
    index = {"UV_INDEX_URL": "https://mirror/simple"}
    assert base != resolution_key("3.11.7", "six\n", "linux-x86_64-glibc2.36", index_env=index)
    unrelated = {"HOME": "/root", "SSL_CERT_FILE": "/ca.pem"}
    assert base == resolution_key("3.11.7", "six\n", "linux-x86_64-glibc2.36", index_env=unrelated)


def test_count_frozen() -> None:
    assert count_frozen("six==1.17.0\nidna==3.7\n\n# comment\n") == 2
    assert count_frozen("") == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("python3.11", PythonSpec(3, 11)),
        ("3.10", PythonSpec(3, 10)),
        ("3.10.13", PythonSpec(3, 10, 13)),
        ("python3", PythonSpec(3)),
        ("python", PythonSpec(3)),
        ("Python3.12", PythonSpec(3, 12)),
        ("/usr/bin/python3", PythonSpec(path="/usr/bin/python3")),
    ],
)
def test_parse_spec(spec: str, expected: PythonSpec) -> None:
    assert parse_spec(spec) == expected


def test_empty_spec_is_the_default() -> None:
    assert parse_spec("", default="3.9") == PythonSpec(3, 9)
    assert parse_spec("").minor is not None  # the agent's own major.minor


@pytest.mark.parametrize("spec", ["python3.x", "pypy3", "3.11; rm -rf /", "latest"])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(StageError, match="not an interpreter I understand"):
        parse_spec(spec)


def test_spec_matching_and_names() -> None:
    assert PythonSpec(3, 10).matches("3.10.13")
    assert not PythonSpec(3, 10).matches("3.1.0")
    assert not PythonSpec(3, 1).matches("3.10.13")
    assert PythonSpec(3).matches("3.12.1")
    assert PythonSpec(3, 10, 13).matches("3.10.13") and not PythonSpec(3, 10, 12).matches("3.10.13")
    assert candidate_names(PythonSpec(3, 10, 13)) == ["python3.10"]
    assert candidate_names(PythonSpec(3)) == ["python3"]
    assert str(PythonSpec(3, 14)) == "3.14"


def test_uv_error_summary_keeps_the_key_lines() -> None:
    plain = (
        "Using Python 3.10.13 environment at: v1\n"
        "error: No solution found when resolving dependencies\n"
        "  cause: Because nonexistent-pkg-zzz was not found in the package registry and you "
        "require nonexistent-pkg-zzz==1, we can conclude that your requirements are "
        "unsatisfiable.\n"
    )
    summary = uv_error_summary(plain)
    assert summary.startswith("error: No solution found when resolving dependencies cause:")
    assert "nonexistent-pkg-zzz was not found" in summary and "Using Python" not in summary
    fancy = "  \u00d7 No solution found\n  \u2570\u2500\u25b6 Because x was not found\n"
    assert uv_error_summary(fancy) == "No solution found Because x was not found"
    assert uv_error_summary("something odd\n") == "something odd"
