"""Samples in, a markdown table and a JSON document out (pure functions)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

CONVEYOR = "conveyor"
CLEARML = "clearml-agent"


@dataclass(frozen=True)
class Sample:
    scenario: str
    metric: str
    agent: str
    value: float


@dataclass(frozen=True)
class Note:
    """Something that could not be measured, or a compatibility finding."""

    scenario: str
    agent: str
    text: str


@dataclass(frozen=True)
class Measure:
    """One row of the table: a metric of a scenario and the goal it is held to."""

    scenario: str
    metric: str
    label: str
    unit: str  # "s", "ms", "%", "MB", "/min", "lines", "x"
    goal: str = ""
    ratio_goal: float = 0.0  # clearml-agent median / Conveyor median must reach this
    max_goal: float | None = None  # Conveyor's median must not exceed this


MEASURES: tuple[Measure, ...] = (
    Measure("pickup", "first_line", "enqueue → first script line runs (warm)", "s",
            "≥ 10x faster", ratio_goal=10),
    Measure("pickup", "visible", "enqueue → first line readable on the server (warm)", "s"),
    Measure("env3", "claim_to_first_line", "cold environment, 3 packages: claim → first line",
            "s", "≥ 5x faster", ratio_goal=5),
    Measure("env3", "enqueue_to_first_line", "cold environment, 3 packages: enqueue → first line",
            "s"),
    Measure("env3", "stage", "cold environment, 3 packages: Conveyor's environment stage", "s"),
    Measure("env30", "claim_to_first_line", "cold environment, 30 packages: claim → first line",
            "s", "≥ 5x faster", ratio_goal=5),
    Measure("env30", "enqueue_to_first_line",
            "cold environment, 30 packages: enqueue → first line", "s"),
    Measure("env30", "stage", "cold environment, 30 packages: Conveyor's environment stage", "s"),
    Measure("torch", "cold_claim_to_first_line", "torch 2.13.0 CPU, first (cold) run: claim → "
            "first line", "s"),
    Measure("torch", "warm_claim_to_first_line", "torch 2.13.0 CPU, warm: claim → first line",
            "s", "Conveyor ≤ 3 s", max_goal=3.0),
    Measure("torch", "stage", "torch 2.13.0 CPU, warm: Conveyor's environment stage", "s"),
    Measure("logs", "lost", "burst: log lines lost (of those printed)", "lines", "0", max_goal=0.0),
    Measure("logs", "split", "burst: log lines broken in two (all content arrived)", "lines"),
    Measure("logs", "lag_p50", "burst: log line lag p50 (printed → at the server)", "s"),
    Measure("logs", "lag_p99", "burst: log line lag p99", "s", "≤ 1 s", max_goal=1.0),
    Measure("logs", "lag_max", "burst: log line lag max", "s"),
    Measure("logs", "wall", "burst: script wall time under the agent", "s"),
    Measure("logs", "wall_ratio", "burst: wall time, agent ÷ bare", "x", "≤ 1.1x", max_goal=1.1),
    Measure("logs", "delivered_after", "burst: last line printed → all at the server", "s"),
    Measure("logs_paced", "lost", "paced: log lines lost", "lines", "0", max_goal=0.0),
    Measure("logs_paced", "split", "paced: log lines broken in two", "lines"),
    Measure("logs_paced", "lag_p50", "paced: log line lag p50", "s"),
    Measure("logs_paced", "lag_p99", "paced: log line lag p99", "s", "≤ 1 s", max_goal=1.0),
    Measure("logs_paced", "lag_max", "paced: log line lag max", "s"),
    Measure("logs_paced", "delivered_after", "paced: last line printed → all at the server", "s"),
    Measure("abort", "tree_gone", "abort: tasks.stop → whole process tree gone", "s",
            "≤ 1 s (+ grace if SIGTERM is ignored)", max_goal=1.0),
    Measure("abort", "status_stopped", "abort: tasks.stop → status stopped", "s"),
    Measure("abort_sdk", "tree_gone", "abort an SDK script: tasks.stop → process tree gone", "s",
            "≤ 1 s", max_goal=1.0),
    Measure("abort_sdk", "status_stopped", "abort an SDK script: tasks.stop → status stopped",
            "s"),
    Measure("idle", "cpu_percent", "idle agent CPU (process tree, of one core)", "%"),
    Measure("idle", "rss_mb", "idle agent RSS (process tree)", "MB"),
    Measure("idle", "requests_per_min", "idle requests to the server", "/min"),
)  # fmt: skip


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def values_of(samples: Iterable[Sample], scenario: str, metric: str, agent: str) -> list[float]:
    return [
        s.value
        for s in samples
        if s.scenario == scenario and s.metric == metric and s.agent == agent
    ]


@dataclass(frozen=True)
class Row:
    measure: Measure
    ours: tuple[float, ...]  # Conveyor's values, one per run
    theirs: tuple[float, ...]  # clearml-agent's

    @property
    def conveyor(self) -> float | None:
        return median(self.ours)

    @property
    def clearml(self) -> float | None:
        return median(self.theirs)

    @property
    def runs(self) -> tuple[int, int]:
        return len(self.ours), len(self.theirs)

    @property
    def ratio(self) -> float | None:
        if self.conveyor is None or self.clearml is None or self.conveyor <= 0:
            return None
        return self.clearml / self.conveyor

    @property
    def met(self) -> bool | None:
        m = self.measure
        if m.ratio_goal:
            return None if self.ratio is None else self.ratio >= m.ratio_goal
        if m.max_goal is not None:
            return None if self.conveyor is None else self.conveyor <= m.max_goal
        return None


def summarise(samples: Sequence[Sample]) -> list[Row]:
    rows = []
    for m in MEASURES:
        ours = values_of(samples, m.scenario, m.metric, CONVEYOR)
        theirs = values_of(samples, m.scenario, m.metric, CLEARML)
        if ours or theirs:
            rows.append(Row(m, tuple(ours), tuple(theirs)))
    return rows


def _cell(values: Sequence[float], unit: str) -> str:
    """The median, and the range when there is more than one run."""
    middle = median(values)
    if middle is None:
        return "—"
    if len(values) < 2 or min(values) == max(values):
        return _fmt(middle, unit)
    return f"{_fmt(middle, unit)} ({_bare(min(values))}..{_bare(max(values))})"


def _bare(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _fmt(value: float, unit: str) -> str:
    if unit == "lines":
        return f"{value:,.0f}"
    if unit in ("MB", "/min", "%"):
        return f"{value:.1f} {unit}"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def markdown(rows: Sequence[Row], notes: Sequence[Note]) -> str:
    lines = [
        "| measure | Conveyor: median (range) | clearml-agent 3.0.3 | clearml ÷ Conveyor "
        "| goal | met | runs |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for row in rows:
        m = row.measure
        ratio = f"{row.ratio:.1f}x" if row.ratio is not None else "—"
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(
            f"| {m.label} | {_cell(row.ours, m.unit)} | {_cell(row.theirs, m.unit)} | "
            f"{ratio} | {m.goal} | {met} | {row.runs[0]} / {row.runs[1]} |"
        )
    if notes:
        lines.append("")
        lines.extend(f"- **{n.scenario}, {n.agent}**: {n.text}" for n in notes)
    return "\n".join(lines)


def document(
    meta: dict[str, Any], samples: Sequence[Sample], notes: Sequence[Note]
) -> dict[str, Any]:
    return {
        "meta": meta,
        "summary": [
            {
                "scenario": r.measure.scenario,
                "metric": r.measure.metric,
                "label": r.measure.label,
                "unit": r.measure.unit,
                "conveyor_median": r.conveyor,
                "clearml_agent_median": r.clearml,
                "ratio": r.ratio,
                "goal": r.measure.goal,
                "met": r.met,
                "runs": list(r.runs),
            }
            for r in summarise(samples)
        ],
        "samples": [asdict(s) for s in samples],
        "notes": [asdict(n) for n in notes],
    }
