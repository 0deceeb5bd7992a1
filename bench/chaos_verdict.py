"""The chaos soak's verdict (pure): per task, from its final document, its console and what its
attempts wrote on disk, whether every promise held; and the printed table."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LINE = re.compile(r"^chaos a(\d+) (\d{4})$")  # what a chaos task prints
TRACE = re.compile(r"^a(\d+) (\d+) (\d+\.\d+)$")  # what it appends to its trace file


@dataclass(frozen=True)
class Expected:
    lines: int
    exit_code: int  # 0: must complete; else must fail with this exit code

    @property
    def status(self) -> str:
        return "completed" if self.exit_code == 0 else "failed"


@dataclass
class TaskVerdict:
    task_id: str
    name: str
    expected: str
    status: str
    attempts: int
    max_attempts: int
    last_lines: str  # "200/200" or what went wrong
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def console_attempts(console: Sequence[str]) -> dict[int, list[int]]:
    """The numbered lines each attempt's process delivered, in console order."""
    out: dict[int, list[int]] = {}
    for line in console:
        found = LINE.match(line)
        if found:
            out.setdefault(int(found[1]), []).append(int(found[2]))
    return out


def trace_spans(trace: Sequence[str]) -> dict[int, tuple[float, float]]:
    """Per attempt, the first and last moment its process was seen printing (trace file)."""
    spans: dict[int, tuple[float, float]] = {}
    for line in trace:
        found = TRACE.match(line.strip())
        if not found:
            continue
        attempt, moment = int(found[1]), float(found[3])
        first, last = spans.get(attempt, (moment, moment))
        spans[attempt] = (min(first, moment), max(last, moment))
    return spans


def overlapping(spans: Mapping[int, tuple[float, float]]) -> list[tuple[int, int]]:
    """Pairs of attempts whose processes were printing at the same time."""
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    return [
        (a, b)
        for (a, (_, a_end)), (b, (b_start, _)) in itertools.pairwise(ordered)
        if b_start < a_end
    ]


def judge_task(
    doc: Mapping[str, Any],
    name: str,
    expected: Expected,
    console: Sequence[str],
    trace: Sequence[str],
    max_attempts: int,
) -> TaskVerdict:
    """Every promise for one task: final status (and reason), attempts within the cap, the
    last attempt's lines all there once and in order, earlier attempts' lines in order with
    no doubles, and no two attempts running at once."""
    runtime = doc.get("runtime") or {}
    attempt = int(runtime.get("conveyor_attempt") or 1)
    status = str(doc.get("status") or "")
    verdict = TaskVerdict(
        str(doc.get("id")), name, expected.status, status, attempt, max_attempts, ""
    )
    problems = verdict.problems
    if status != expected.status:
        problems.append(
            f"status {status!r} ({doc.get('status_reason')}), expected {expected.status}"
        )
    elif expected.exit_code and str(doc.get("status_reason")) != f"exit code {expected.exit_code}":
        problems.append(f"failed with {doc.get('status_reason')!r}, not its exit code")
    if attempt > max_attempts:
        problems.append(f"attempt {attempt} is beyond the cap of {max_attempts}")
    by_attempt = console_attempts(console)
    last = by_attempt.get(attempt, [])
    verdict.last_lines = f"{len(last)}/{expected.lines}"
    if status in ("completed", "failed") and last != list(range(expected.lines)):
        problems.append(f"attempt {attempt}'s lines are not 0..{expected.lines - 1} once in order")
    for earlier, lines in by_attempt.items():
        if earlier != attempt and lines != list(range(len(lines))):
            problems.append(f"attempt {earlier}'s lines doubled or out of order")
        if earlier > attempt:
            problems.append(f"lines of attempt {earlier}, after the task's last attempt {attempt}")
    for a, b in overlapping(trace_spans(trace)):
        problems.append(f"attempts {a} and {b} ran at the same time")
    return verdict


def markdown(verdicts: Sequence[TaskVerdict], summary: Mapping[str, Any]) -> str:
    """The soak's report: a summary and one row per task."""
    out = ["| what | value |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in summary.items()]
    out += [
        "",
        "| task | expected | final | attempts | last attempt's lines | verdict |",
        "|---|---|---|---:|---:|---|",
    ]
    for v in verdicts:
        said = "ok" if v.ok else "; ".join(v.problems)
        attempts = f"{v.attempts} of {v.max_attempts}"
        out.append(
            f"| {v.name} | {v.expected} | {v.status} | {attempts} | {v.last_lines} | {said} |"
        )
    return "\n".join(out)
