"""The pipeline stages' timeline of a task (source, models, environment, run), derived from the
lines its agent wrote into the console (``conveyor: source: …``, ``conveyor: starting …``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.supervise.logs import AGENT_PREFIX

HEAD_ENTRIES = 2_000  # the stages of a run are written before its own output starts
TAIL_ENTRIES = 200  # ... and "process ended" after it


@dataclass(frozen=True)
class Stage:
    attempt: int
    name: str  # source | models | environment | run
    start: int  # ms since the epoch (the console entries' timestamps)
    end: int | None  # None: not ended (yet, or the agent stopped writing)

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else (self.end - self.start) / 1000


@dataclass
class _Attempt:
    number: int
    start: int
    source: int | None = None
    models: int | None = None
    environment: int | None = None
    run_start: int | None = None
    run_end: int | None = None

    def stages(self) -> list[Stage]:
        found: list[Stage] = []
        if self.source is not None:
            found.append(Stage(self.number, "source", self.start, self.source))
        after_source = self.source if self.source is not None else self.start
        if self.models is not None:  # the input models download while the environment is built
            found.append(Stage(self.number, "models", after_source, self.models))
        if self.environment is not None:
            found.append(Stage(self.number, "environment", after_source, self.environment))
        if self.run_start is not None:
            found.append(Stage(self.number, "run", self.run_start, self.run_end))
        return found


def _attempt_number(line: str, current: int) -> int:
    words = line.split()
    return int(words[1]) if len(words) > 1 and words[1].isdigit() else current + 1


def _note(attempt: _Attempt, line: str, stamp: int) -> None:
    if line.startswith("source: "):
        attempt.source = stamp
    elif line.startswith("model ") and ("→ $" in line or ": cache hit" in line):
        attempt.models = stamp
    elif line.startswith("environment: "):
        attempt.environment = stamp
    elif line.startswith("starting "):
        attempt.run_start = stamp
    elif line.startswith("process ended after "):
        attempt.run_end = stamp


def timeline(entries: Iterable[tuple[int, str]]) -> list[Stage]:
    """Stages of each attempt from console entries ``(timestamp ms, text)`` in log order: an
    attempt starts at its agent's ``attempt N of M`` (or ``task '…'``) line; a stage ends at the
    line the agent writes when it is done (source, models, environment) and the run spans
    ``starting …`` to ``process ended after …``. Lines not the agent's are ignored."""
    attempts: list[_Attempt] = []
    for stamp, text in entries:
        for raw in text.splitlines():
            if not raw.startswith(AGENT_PREFIX):
                continue
            line = raw[len(AGENT_PREFIX) :]
            if line.startswith("attempt "):
                previous = attempts[-1].number if attempts else 0
                attempts.append(_Attempt(_attempt_number(line, previous), stamp))
                continue
            if line.startswith("task '") and not attempts:  # an agent that wrote no header
                attempts.append(_Attempt(1, stamp))
                continue
            if attempts:
                _note(attempts[-1], line, stamp)
    return [stage for attempt in attempts for stage in attempt.stages()]


def read(conn: sqlite3.Connection, task_id: str) -> list[Stage]:
    """The timeline from the first ``HEAD_ENTRIES`` and last ``TAIL_ENTRIES`` log entries (a
    bounded read however long the log; stages written in between are not seen)."""
    select = "SELECT seq, timestamp, json_extract(doc, '$.msg') FROM events WHERE task=? AND type=?"
    head = conn.execute(
        f"{select} ORDER BY timestamp, seq LIMIT ?", (task_id, "log", HEAD_ENTRIES)
    ).fetchall()
    tail = conn.execute(
        f"{select} ORDER BY timestamp DESC, seq DESC LIMIT ?", (task_id, "log", TAIL_ENTRIES)
    ).fetchall()[::-1]
    seen = {row[0] for row in head}
    rows = head + [row for row in tail if row[0] not in seen]
    return timeline((int(r[1]), str(r[2] or "")) for r in rows)


def bars(stages: list[Stage], width: int = 1000) -> list[dict[str, object]]:
    """Each stage with its offset and length on a ``width``-unit axis from the first stage's
    start to the last moment known (an unended stage runs to it), for an SVG bar chart."""
    if not stages:
        return []
    first = min(s.start for s in stages)
    last = max(max(s.start, s.end or s.start) for s in stages)
    span = max(1, last - first)
    shown = []
    for s in stages:
        end = last if s.end is None else s.end
        x = round((s.start - first) * width / span)
        started = datetime.fromtimestamp(s.start / 1000, UTC).isoformat()
        shown.append({"stage": s, "x": x, "w": max(2, round((end - s.start) * width / span)),
                      "offset": (s.start - first) / 1000, "started": started})  # fmt: skip
    return shown
