"""Metrics from the real machine (psutil; NVML when a driver exists) and a real process tree."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pynvml
import pytest

from agent.api.client import ApiClient
from agent.server.embedded import EmbeddedServer
from agent.supervise.metrics import (
    GPU_METRIC,
    MACHINE_METRIC,
    MachineSampler,
    ProcessTreeSampler,
    TaskMonitor,
    gpu_count,
    machine_stats,
)
from agent.supervise.process import Abort, run_process

WAIT = 20.0


def nvml_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    return True


def test_machine_stats_shape(tmp_path: Path) -> None:
    sampler = MachineSampler()
    first = sampler.sample()
    assert len(first["cpu_usage"]) == psutil.cpu_count()
    assert first["memory_used"] > 0 and first["memory_free"] > 0
    assert 0.0 <= first["disk_free_home"] <= 100.0
    (tmp_path / "blob").write_bytes(os.urandom(1024 * 1024))  # some I/O between samples
    second = sampler.sample()
    for key in ("network_rx", "network_tx", "disk_read", "disk_write"):
        assert second.get(key, 0.0) >= 0.0
    assert "network_rx" in second
    assert all(0.0 <= c <= 100.0 for c in second["cpu_usage"])
    assert set(machine_stats()) >= {"cpu_usage", "memory_used", "memory_free"}


@pytest.mark.skipif(nvml_present(), reason="a GPU driver is present")
def test_without_nvml_there_are_no_gpu_fields() -> None:
    assert gpu_count() == 0
    assert not any(key.startswith("gpu_") for key in MachineSampler().sample())
    sample = ProcessTreeSampler(os.getpid()).sample()
    assert GPU_METRIC not in sample


@pytest.fixture
def busy_tree() -> Iterator[subprocess.Popen[bytes]]:
    """A process burning CPU with a child holding ~100 MB."""
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', "
        '\'import time; b = bytearray(100 * 1024 * 1024); b[::4096] = b"x" * len(b[::4096]); '
        "time.sleep(60)'])\n"
        "while True: pass\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    yield proc
    os.killpg(proc.pid, 9)
    proc.wait()


def test_process_tree_sampler_measures_cpu_and_memory(
    busy_tree: subprocess.Popen[bytes],
) -> None:
    sampler = ProcessTreeSampler(busy_tree.pid)
    deadline = time.monotonic() + WAIT
    values = sampler.sample()[MACHINE_METRIC]
    while values["memory_used_gb"] < 0.09 or values["cpu_usage"] <= 0:
        assert time.monotonic() < deadline, values
        time.sleep(0.2)
        values = sampler.sample()[MACHINE_METRIC]
    assert 0 < values["cpu_usage"] <= 100.0


def test_process_tree_sampler_of_a_dead_process_is_zero() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    values = ProcessTreeSampler(proc.pid).sample()[MACHINE_METRIC]
    assert values == {"cpu_usage": 0.0, "memory_used_gb": 0.0}


class NullSink:
    def write_lines(
        self, lines: Sequence[str], level: str = "info", ts: float | None = None
    ) -> None:
        pass


async def test_task_monitor_reports_scalars_for_a_running_task(
    shared_server: EmbeddedServer, tmp_path: Path
) -> None:
    creds = shared_server.credentials
    async with ApiClient(shared_server.url, creds.access_key, creds.secret_key) as api:
        task_id = await api.create_task("monitored")
        abort = Abort()
        async with TaskMonitor(api, task_id, interval=0.1) as monitor:
            run = asyncio.create_task(
                run_process(
                    [sys.executable, "-c", "import time; time.sleep(60)"],
                    cwd=tmp_path,
                    env=dict(os.environ),
                    sink=NullSink(),
                    abort=abort,
                    on_start=monitor.attach,
                )
            )
            deadline = time.monotonic() + WAIT
            while monitor.reports < 2:
                assert time.monotonic() < deadline, "no metrics reported"
                await asyncio.sleep(0.05)
            abort.trip("test done")
            await asyncio.wait_for(run, WAIT)
        doc = await api.get_task_document(task_id)
        reported = {
            (v["metric"], v["variant"]) for m in doc["last_metrics"].values() for v in m.values()
        }
        assert {(MACHINE_METRIC, "cpu_usage"), (MACHINE_METRIC, "memory_used_gb")} <= reported
