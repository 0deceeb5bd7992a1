"""The comparison harness's log accounting (bench/compare), on hand-made event streams.

Pure functions; they live here, beside the compatibility test, because the harness is what
that test shares code with. A wrong reassembly would report lines as lost that arrived.
"""

from __future__ import annotations

from bench.compare.report import CLEARML, CONVEYOR, Sample, markdown, summarise
from bench.compare.scenarios import CUT, numbered, reassemble
from bench.compare.tasks import wall_of


def lines(chunks: list[str]) -> list[str]:
    return [text for _, text in reassemble((float(n), c) for n, c in enumerate(chunks))]


def test_whole_messages_are_lines() -> None:
    assert lines(["L 0 1.5", "L 1 1.6\nL 2 1.7\n"]) == ["L 0 1.5", "L 1 1.6", "L 2 1.7"]


def test_a_message_cut_at_the_size_limit_continues_in_the_next() -> None:
    head = "x" * (CUT - len("\nL 7 12")) + "\nL 7 12"
    assert len(head) == CUT

    assert lines([head, "3.25\nL 8 124.0\n"])[1:] == ["L 7 123.25", "L 8 124.0"]


def test_a_line_sent_in_pieces_is_joined_and_marked_split() -> None:
    stream = [(0.0, "L 1 10.0"), (1.0, "L 2 "), (2.0, "11.0"), (3.0, "L 3 12.0")]

    found = [(n.index, n.printed, n.split, n.at) for n in numbered(stream)]

    assert found == [(1, 10.0, False, 0.0), (2, 11.0, True, 2.0), (3, 12.0, False, 3.0)]


def test_a_fragment_that_never_completes_is_not_counted() -> None:
    stream = [(0.0, "L 5"), (1.0, "something else"), (2.0, "L 6 1.0")]

    assert [n.index for n in numbered(stream)] == [6]


def test_wall_line_is_found_even_when_broken() -> None:
    assert wall_of("L 9 1.0WALL 12.5 1795428454.25Process completed") == (12.5, 1795428454.25)
    assert wall_of("no such line") is None


def test_summary_ratio_and_goal() -> None:
    samples = [
        Sample("pickup", "first_line", CONVEYOR, 0.3),
        Sample("pickup", "first_line", CONVEYOR, 0.5),
        Sample("pickup", "first_line", CONVEYOR, 0.4),
        Sample("pickup", "first_line", CLEARML, 5.0),
    ]

    (row,) = summarise(samples)

    assert row.conveyor == 0.4 and row.clearml == 5.0
    assert row.ratio == 12.5 and row.met is True
    assert "| 0.400 s (0.3..0.5) | 5.000 s | 12.5x |" in markdown([row], [])
