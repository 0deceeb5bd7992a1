"""The pipeline stages' timeline derived from the agent's console lines (pure)."""

from __future__ import annotations

from agent.server.web.timeline import Stage, bars, timeline

P = "conveyor: "


def test_stages_of_two_attempts_from_the_agents_lines() -> None:
    entries = [
        (1_000, P + "attempt 1 of 2"),
        (1_010, P + "task 'train' (abc) on box, gpus: none"),
        (1_500, P + "source: https://x/r.git @ 1234567 (clone, 0.49 s)"),
        (1_600, "a line the task printed: source: not the agent"),
        (2_000, P + "model base: fetched file:///m.bin (1 KB, 0.1 s, sha256 ab verified) → ${M}"),
        (4_500, P + "requirements: 3 from r.txt\n" + P + "environment: python 3.11, ready in 3 s"),
        (4_600, P + "starting train.py --lr 0.1 in /w"),
        (9_600, P + "process ended after 5.0 s: exit code 1"),
        (10_000, P + "attempt 2 of 2"),
        (10_200, P + "source: https://x/r.git @ 1234567 (cache hit, 0.01 s)"),
        (10_300, P + "environment: python 3.11, 3 packages, ready in 0.1 s (cached)"),
        (10_400, P + "starting train.py --lr 0.1 in /w"),
    ]  # fmt: skip
    assert timeline(entries) == [
        Stage(1, "source", 1_000, 1_500),
        Stage(1, "models", 1_500, 2_000),
        Stage(1, "environment", 1_500, 4_500),
        Stage(1, "run", 4_600, 9_600),
        Stage(2, "source", 10_000, 10_200),
        Stage(2, "environment", 10_200, 10_300),
        Stage(2, "run", 10_400, None),  # still running
    ]


def test_no_agent_lines_no_stages_and_a_headerless_agent_starts_at_its_task_line() -> None:
    assert timeline([(1, "hello"), (2, "conveyor was here")]) == []
    entries = [
        (5, P + "task 't' (x) on h, gpus: 0"),
        (7, P + "source: literal script a.py (3 lines)"),
    ]
    assert timeline(entries) == [Stage(1, "source", 5, 7)]


def test_bars_place_each_stage_on_one_axis() -> None:
    stages = [
        Stage(1, "source", 0, 250),
        Stage(1, "run", 500, None),
        Stage(1, "environment", 250, 1_000),
    ]
    shown = bars(stages, width=100)
    assert [(b["x"], b["w"]) for b in shown] == [(0, 25), (50, 50), (25, 75)]
    assert shown[1]["offset"] == 0.5 and str(shown[0]["started"]).startswith("1970-01-01T00:00:00")
    assert bars([]) == []
