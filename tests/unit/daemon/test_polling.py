from agent.api.errors import INVALID_QUEUE_ID, ApiError, error_from
from agent.worker.policy import next_poll_delay, no_such_endpoint, queue_order


def test_poll_delay_is_zero_while_working_and_backs_off_when_idle() -> None:
    assert next_poll_delay(1.0, True, 0.05, 0.5) == 0.0
    delays = []
    d = 0.0
    for _ in range(6):
        d = next_poll_delay(d, False, 0.05, 0.5)
        delays.append(d)
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]


def test_queue_order_priority_and_round_robin() -> None:
    assert queue_order(["a", "b", "c"], False, 5) == ["a", "b", "c"]
    assert queue_order(["a", "b", "c"], True, 1) == ["b", "c", "a"]
    assert queue_order(["a", "b", "c"], True, 3) == ["a", "b", "c"]
    assert queue_order([], True, 1) == []


def test_only_a_missing_endpoint_turns_long_polls_off() -> None:
    def refusal(code: int, subcode: int = 0) -> ApiError:
        return error_from(code, subcode, "refused", "queues.wait_for_entries")

    assert no_such_endpoint(refusal(404))  # Conveyor's answer for an unknown endpoint
    assert no_such_endpoint(refusal(400, 0))  # a server that answers "invalid request"
    assert not no_such_endpoint(refusal(400, INVALID_QUEUE_ID))  # a queue was deleted
    assert not no_such_endpoint(refusal(401))
    assert not no_such_endpoint(refusal(500))
