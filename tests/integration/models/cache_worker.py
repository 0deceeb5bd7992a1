"""One agent's worth of model fetches against a shared cache, checking the cache after each.

Run in threads by ``test_models_eviction.py`` and as a separate process
(``python -m tests.integration.models.cache_worker`` with a :class:`Job` as JSON on stdin, a
:class:`Report` as JSON on stdout), so that the cache's file locks are exercised both ways.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from agent.pipeline.models import CacheState, ModelCache, ModelSource


@dataclass(frozen=True)
class Model:
    uri: str
    sha256: str  # of its content
    recorded: bool  # the model document records the digest (a hit whatever the URI)

    def source(self, index: int) -> ModelSource:
        recorded = self.sha256 if self.recorded else None
        return ModelSource(f"m{index}", f"id{index}", self.uri, recorded)


@dataclass(frozen=True)
class Job:
    name: str
    root: str
    max_bytes: int
    models: list[Model]
    steps: int
    seed: int


@dataclass
class Report:
    name: str
    fetches: int = 0
    over_bound: int = 0  # checks that found the cache over its bound (every entry leased)
    violations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Held:
    owner: str
    path: Path
    sha256: str
    until: int  # released after this step


def run(job: Job) -> Report:
    """Fetch a random model ``job.steps`` times; keep some leases for a few steps; after every
    fetch and release, check the bound and that every model still leased is there, intact."""
    cache = ModelCache(Path(job.root), job.max_bytes)
    models = list(enumerate(job.models))
    rng = random.Random(job.seed)
    report = Report(job.name)
    held: list[_Held] = []
    for step in range(job.steps):
        index, model = rng.choice(models)
        owner = f"{job.name}-{step}"
        fetched = cache.fetch(model.source(index), owner=owner)
        report.fetches += 1
        if _digest(fetched.path) != model.sha256:
            report.violations.append(f"{owner}: got the wrong bytes for model {index}")
        held.append(_Held(owner, fetched.path, model.sha256, step + rng.choice([0, 0, 1, 3])))
        _check(cache, held, report, f"after fetch {owner}")
        for lease in [lease for lease in held if lease.until <= step]:
            cache.release(lease.owner)
            held.remove(lease)
        _check(cache, held, report, f"after releases at step {step}")
    for lease in held:
        cache.release(lease.owner)
    return report


def _check(cache: ModelCache, held: list[_Held], report: Report, when: str) -> None:
    state: CacheState = cache.state()
    if not state.within_bound:
        report.violations.append(f"{when}: {state.total} bytes > {state.max_bytes}: {state}")
    elif state.total > state.max_bytes:
        report.over_bound += 1
    keys = {entry.key for entry in state.entries if entry.leased}
    for lease in held:
        if lease.sha256 not in keys or _digest(lease.path) != lease.sha256:
            report.violations.append(f"{when}: {lease.owner}'s leased model is gone or changed")


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return "missing"


if __name__ == "__main__":
    # stdout carries the report: the agent's log events go to stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    doc = json.load(sys.stdin)
    result = run(Job(**{**doc, "models": [Model(**model) for model in doc["models"]]}))
    json.dump(asdict(result), sys.stdout)
