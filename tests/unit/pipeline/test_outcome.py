from agent.pipeline.abort import abort_reason_from_status
from agent.pipeline.report import Outcome, Status
from agent.pipeline.run import judge
from agent.supervise.process import ExitInfo


def _exit(**kw: object) -> ExitInfo:
    base: dict[str, object] = {
        "returncode": 0, "signal": None, "aborted": None, "timed_out": False, "duration": 1.0
    }  # fmt: skip
    base.update(kw)
    return ExitInfo(**base)  # type: ignore[arg-type]


def test_judge_maps_endings_to_honest_statuses() -> None:
    assert judge(_exit()) == Outcome.completed()
    assert judge(_exit(returncode=3)) == Outcome.failed("exit code 3")
    assert judge(_exit(returncode=None, signal=9)).reason.startswith("killed by signal 9")
    assert judge(_exit(aborted="agent shutdown")) == Outcome.stopped("agent shutdown")
    timed = judge(_exit(returncode=None, signal=15, timed_out=True, timeout=60.0))
    assert timed.status is Status.FAILED
    assert timed.reason == "timed out after 60 s"


def test_abort_reason_from_status() -> None:
    assert abort_reason_from_status("in_progress", "") is None
    assert abort_reason_from_status("in_progress", "pulled by agent") is None
    assert abort_reason_from_status("in_progress", "stopping") == "aborted by user"
    assert abort_reason_from_status("stopped", "") == "aborted by user (task was stopped)"
    assert abort_reason_from_status("created", "") == "aborted by user (task was reset)"
    assert "failed" in (abort_reason_from_status("failed", "") or "")
