"""describe(ExitInfo): a reason a user can act on."""

from __future__ import annotations

from agent.supervise.process import ExitInfo, describe


def info(**kw: object) -> ExitInfo:
    base: dict[str, object] = {
        "returncode": None,
        "signal": None,
        "aborted": None,
        "timed_out": False,
        "duration": 1.0,
    }
    base.update(kw)
    return ExitInfo(**base)  # type: ignore[arg-type]


def test_exit_codes() -> None:
    assert describe(info(returncode=3)) == "exit code 3"
    assert describe(info(returncode=0)) == "exit code 0"
    assert info(returncode=0).succeeded and not info(returncode=1).succeeded


def test_signals_with_hints() -> None:
    assert describe(info(signal=9)) == "killed by signal 9 (SIGKILL: out of memory?)"
    assert describe(info(signal=11)) == "killed by signal 11 (SIGSEGV: segmentation fault)"
    text = describe(info(signal=9, max_rss=3 * 1024**3))
    assert "peak memory 3.0 GB" in text
    assert describe(info(returncode=137)).startswith("exit code 137 (128 + signal 9 (SIGKILL")


def test_abort_and_timeout_take_precedence() -> None:
    assert describe(info(signal=15, aborted="aborted by user")) == "aborted: aborted by user"
    assert describe(info(signal=15, timed_out=True, timeout=3600.0)) == "timed out after 3600 s"
    assert not info(returncode=0, timed_out=True).succeeded
