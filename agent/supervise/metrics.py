"""Machine and task metrics: psutil for CPU, memory, disk and network; NVML for GPUs.

- :class:`MachineSampler` produces ``workers.status_report`` ``machine_stats`` (rates such as
  network MB/s are computed between two calls, so it keeps the previous counters);
- :class:`ProcessTreeSampler` measures one task's process tree (CPU, RSS, GPU memory) for the
  task's ``:monitor:machine`` / ``:monitor:gpu`` scalars;
- :class:`TaskMonitor` reports those scalars periodically as a side task of a running task.

Without NVML (no driver, no GPU) every GPU field is simply absent and :func:`gpu_count` is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import structlog

from agent.api.client import ApiClient
from agent.api.errors import ApiError
from agent.supervise.sidetask import SideTask

log = structlog.get_logger()

MB = 1024 * 1024
GB = 1024 * MB
MONITOR_INTERVAL_S = 30.0
MACHINE_METRIC = ":monitor:machine"
GPU_METRIC = ":monitor:gpu"

# What pynvml itself loads on Linux; tried first so that a machine without the NVIDIA driver
# never imports pynvml (its ctypes definitions alone cost ~17 MB of an idle agent's memory).
NVML_LIBRARY = "libnvidia-ml.so.1"

_nvml_lock = threading.Lock()
_nvml_state: Any = None  # None: not tried yet; False: unavailable; else the pynvml module


def _nvml() -> Any:
    """The pynvml module, initialised once; None (and a debug log) without a usable driver."""
    global _nvml_state
    with _nvml_lock:
        if _nvml_state is None:
            _nvml_state = _init_nvml()
        return _nvml_state or None


def _init_nvml() -> Any:
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError as exc:
        log.debug("nvml unavailable", error=str(exc))
        return False
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("nvml unavailable", error=str(exc))
        return False
    return pynvml


def gpu_count() -> int:
    nvml = _nvml()
    if nvml is None:
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as exc:
        log.warning("nvml device count failed", error=str(exc))
        return 0


def _gpu_handles(nvml: Any) -> Iterator[Any]:
    for index in range(gpu_count()):
        yield nvml.nvmlDeviceGetHandleByIndex(index)


def gpu_stats() -> dict[str, list[float]]:
    """``gpu_usage`` (%), ``gpu_temperature`` (C), ``gpu_memory_used/free`` (MB) per GPU;
    empty without NVML or when the driver fails mid-way."""
    nvml = _nvml()
    if nvml is None:
        return {}
    stats: dict[str, list[float]] = {
        "gpu_usage": [],
        "gpu_temperature": [],
        "gpu_memory_used": [],
        "gpu_memory_free": [],
    }
    try:
        for handle in _gpu_handles(nvml):
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            stats["gpu_usage"].append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            stats["gpu_temperature"].append(
                float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            )
            stats["gpu_memory_used"].append(memory.used / MB)
            stats["gpu_memory_free"].append(memory.free / MB)
    except nvml.NVMLError as exc:
        log.warning("nvml sampling failed", error=str(exc))
        return {}
    return stats if stats["gpu_usage"] else {}


def _rate(now: float, before: float, seconds: float) -> float:
    return max(now - before, 0.0) / MB / seconds if seconds > 0 else 0.0


class MachineSampler:
    """``machine_stats`` for ``workers.status_report``; keeps counters between calls."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or Path.home()
        self._last: tuple[float, Any, Any] | None = None
        psutil.cpu_percent(percpu=True)  # start the CPU measurement window

    def sample(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        stats: dict[str, Any] = {
            "cpu_usage": [float(p) for p in psutil.cpu_percent(percpu=True)],
            "memory_used": (memory.total - memory.available) / MB,
            "memory_free": memory.available / MB,
        }
        with contextlib.suppress(OSError):
            disk = psutil.disk_usage(str(self.home))
            stats["disk_free_home"] = 100.0 * disk.free / disk.total if disk.total else 0.0
        stats.update(self._rates())
        stats.update(gpu_stats())
        return stats

    def _rates(self) -> dict[str, float]:
        now = time.monotonic()
        net = psutil.net_io_counters()
        disk = psutil.disk_io_counters()
        last, self._last = self._last, (now, net, disk)
        if last is None:
            return {}
        seconds = now - last[0]
        rates: dict[str, float] = {}
        if net is not None and last[1] is not None:
            rates["network_rx"] = _rate(net.bytes_recv, last[1].bytes_recv, seconds)
            rates["network_tx"] = _rate(net.bytes_sent, last[1].bytes_sent, seconds)
        if disk is not None and last[2] is not None:
            rates["disk_read"] = _rate(disk.read_bytes, last[2].read_bytes, seconds)
            rates["disk_write"] = _rate(disk.write_bytes, last[2].write_bytes, seconds)
        return rates


_default_sampler: MachineSampler | None = None


def machine_stats() -> dict[str, Any]:
    """``MachineSampler.sample`` of a process-wide sampler (rates since the previous call)."""
    global _default_sampler
    if _default_sampler is None:
        _default_sampler = MachineSampler()
    return _default_sampler.sample()


def _gpu_memory_by_pid() -> dict[int, list[float]]:
    """pid → GPU memory (bytes) used on each GPU index; empty without NVML."""
    out: dict[int, list[float]] = {}
    nvml = _nvml()
    if nvml is None:
        return out
    try:
        handles = list(_gpu_handles(nvml))
        for index, handle in enumerate(handles):
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used = float(proc.usedGpuMemory or 0)
                out.setdefault(int(proc.pid), [0.0] * len(handles))[index] += used
    except nvml.NVMLError as exc:
        log.debug("nvml process query failed", error=str(exc))
        return {}
    return out


class ProcessTreeSampler:
    """CPU and memory of one process and its descendants, for the task's scalars."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._procs: dict[int, psutil.Process] = {}
        self._cpus = psutil.cpu_count() or 1

    def _tree(self) -> list[psutil.Process]:
        try:
            root = self._procs.get(self.pid) or psutil.Process(self.pid)
            current = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        # keep the Process objects: cpu_percent measures since the previous call on the same one
        self._procs = {p.pid: self._procs.get(p.pid, p) for p in current}
        return list(self._procs.values())

    def sample(self) -> dict[str, dict[str, float]]:
        """``{":monitor:machine": {cpu_usage, memory_used_gb}, ":monitor:gpu": {...}}``; the
        CPU figure is % of the whole machine (the first sample reads 0)."""
        cpu = rss = 0.0
        tree = self._tree()
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                cpu += proc.cpu_percent(interval=None)
                rss += proc.memory_info().rss
        scalars = {MACHINE_METRIC: {"cpu_usage": cpu / self._cpus, "memory_used_gb": rss / GB}}
        gpu_memory = _gpu_memory_by_pid()
        if gpu_memory:
            per_gpu = [0.0] * len(next(iter(gpu_memory.values())))
            for proc in tree:
                for index, used in enumerate(gpu_memory.get(proc.pid, [])):
                    per_gpu[index] += used
            scalars[GPU_METRIC] = {
                f"gpu_{i}_mem_used_gb": used / GB for i, used in enumerate(per_gpu)
            }
        return scalars


class TaskMonitor(SideTask):
    """Reports a running task's resource scalars every ``interval`` s (a named side task).

    ``attach(pid)`` is given to :func:`~agent.supervise.process.run_process` as ``on_start``.
    Reporting failures are logged and never end the task.
    """

    def __init__(self, api: ApiClient, task_id: str, interval: float = MONITOR_INTERVAL_S) -> None:
        self.api = api
        self.task_id = task_id
        self.interval = interval
        self._sampler: ProcessTreeSampler | None = None
        self._attached = asyncio.Event()
        self._started = time.monotonic()
        self.reports = 0

    def attach(self, pid: int) -> None:
        self._sampler = ProcessTreeSampler(pid)
        self._sampler.sample()  # start the CPU measurement window
        self._started = time.monotonic()
        self._attached.set()

    @property
    def side_name(self) -> str:
        return f"task-monitor:{self.task_id}"

    async def _run(self) -> None:
        await self._attached.wait()
        while True:
            await asyncio.sleep(self.interval)
            await self.report_once()

    async def report_once(self) -> None:
        if self._sampler is None:
            return
        scalars = await asyncio.to_thread(self._sampler.sample)
        iteration = int(time.monotonic() - self._started)
        for metric, values in scalars.items():
            try:
                await self.api.add_scalars(self.task_id, metric, values, iteration)
            except ApiError as exc:
                log.warning("task metrics not reported", task_id=self.task_id, error=str(exc))
                return
        self.reports += 1
