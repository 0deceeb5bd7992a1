from agent.api.client import ApiClient
from agent.pipeline.abort import (
    abort_reason_from_status,
    callback_done,
    callback_wait,
    outside_final_status,
)
from agent.pipeline.report import Outcome, Status, report
from agent.pipeline.run import _final_line, judge, settle
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


def test_outside_final_status_stands() -> None:
    assert outside_final_status("failed") is Status.FAILED
    assert outside_final_status("completed") is Status.COMPLETED
    assert outside_final_status("stopped") is Status.STOPPED
    assert outside_final_status("queued") is None
    assert outside_final_status("created") is None
    assert outside_final_status("in_progress") is None


def test_settle_keeps_an_outside_status_and_reports_nothing() -> None:
    stopped = Outcome.stopped("task status changed to 'failed' on the server")
    outside = settle(stopped, stopped.reason, Status.FAILED)
    assert outside == Outcome(Status.FAILED, "marked failed from outside", outside=True)
    assert _final_line(outside) == "task was marked failed from outside; process stopped"
    assert settle(Outcome.completed(), None, None) == Outcome.completed()  # no stop asked


def test_settle_a_process_that_ended_itself_during_a_stop_is_stopped() -> None:
    # An SDK script exits 1 by itself after its abort callback: the user's stop, not a failure.
    assert settle(Outcome.failed("exit code 1"), "aborted by user", None) == Outcome.stopped(
        "aborted by user"
    )
    assert settle(Outcome.completed(), "aborted by user", None) == Outcome.completed()
    assert settle(Outcome.stopped("agent shutdown"), "agent shutdown", None) == Outcome.stopped(
        "agent shutdown"
    )


def test_callback_wait_from_the_sdk_runtime_properties() -> None:
    assert callback_wait({}) is None
    assert callback_wait({"_abort_callback_timeout": -1.0}) is None  # callback removed
    assert callback_wait({"_abort_callback_timeout": "x"}) is None
    assert callback_wait({"_abort_callback_timeout": 30.0, "_abort_poll_freq": 15.0}) == 45.0
    assert callback_wait({"_abort_callback_timeout": 1e6, "_abort_poll_freq": 15}) == 1800.0
    assert not callback_done({"_abort_callback_completed": ""})
    assert callback_done({"_abort_callback_completed": 1})


async def test_report_sends_nothing_over_an_outside_status() -> None:
    # Any call would fail: the client points at a closed port and never retries.
    api = ApiClient("http://127.0.0.1:9", "k", "s", retry_for=0)
    try:
        assert await report(api, "t1", Outcome.set_outside(Status.FAILED))
        assert not await report(api, "t1", Outcome.failed("exit code 1"))
    finally:
        await api.aclose()
