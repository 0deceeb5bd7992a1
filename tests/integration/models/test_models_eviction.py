"""The cache never exceeds its bound and never evicts a model in use: agents in processes and in
threads fetch models of known sizes concurrently, holding some leases for a few fetches, and
check the cache after every fetch and release (see cache_worker.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pytest

from agent.pipeline.models import ModelCache
from tests.helpers import REPO_ROOT, python_executable
from tests.integration.models.cache_worker import Job, Model, Report, run

WORKER_TIMEOUT = 120.0  # 15 fetches take under a second on an idle machine

BOUND = 1_000_000
SIZES = [100_000 + 25_000 * i for i in range(16)]  # 100 kB … 475 kB, 4.6 MB in all
STEPS = 15
PROCESSES, THREADS = 3, 2


def make_models(folder: Path) -> list[Model]:
    folder.mkdir()
    models = []
    for i, size in enumerate(SIZES):
        content = bytes([i]) * size
        path = folder / f"m{i}.bin"
        path.write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        models.append(Model(path.as_uri(), digest, recorded=i % 2 == 0))
    return models


def start_process(job: Job) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [python_executable(), "-m", "tests.integration.models.cache_worker"],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(asdict(job)))
    proc.stdin.close()
    return proc


def report_of(proc: subprocess.Popen[str]) -> Report:
    assert proc.stdout is not None
    try:
        proc.wait(timeout=WORKER_TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"worker exited with {proc.returncode}"
    return Report(**json.loads(proc.stdout.read()))


@pytest.mark.slow  # ~4 s: five agents, two of them threads, three processes
def test_concurrent_fetches_keep_the_bound_and_never_evict_a_leased_model(
    tmp_path: Path,
) -> None:
    models = make_models(tmp_path / "src")
    root = tmp_path / "cache"
    cache = ModelCache(root, BOUND)
    # The largest model stays leased the whole time: the others' leases push the cache over.
    pinned = cache.fetch(models[-1].source(len(models) - 1), owner="pinned")
    jobs = [
        Job(f"w{n}", str(root), BOUND, models, STEPS, seed=n) for n in range(PROCESSES + THREADS)
    ]

    procs = [start_process(job) for job in jobs[:PROCESSES]]
    with ThreadPoolExecutor(THREADS) as pool:
        reports = list(pool.map(run, jobs[PROCESSES:]))
    reports += [report_of(proc) for proc in procs]

    assert [r.violations for r in reports] == [[]] * len(jobs)
    assert [r.fetches for r in reports] == [STEPS] * len(jobs)
    assert sum(r.over_bound for r in reports) > 0  # leases did force it over: spared, checked
    assert pinned.path.read_bytes() == bytes([len(models) - 1]) * SIZES[-1]
    assert [e.key for e in cache.state().entries if e.leased] == [models[-1].sha256]

    cache.release("pinned")
    state = cache.state()
    assert state.within_bound and state.total <= BOUND
    assert not any(entry.leased for entry in state.entries)
    assert sorted(p.name for p in (root / "entries").iterdir()) == sorted(
        entry.key for entry in state.entries
    )
    assert not any((root / "tmp").iterdir())
    assert not any((root / "leases").iterdir())
