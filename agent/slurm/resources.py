"""Pure: the ``sbatch`` options of one task, from the queue's mapping, the defaults and the
task's ``Slurm`` section, each value checked against a whitelist (no option or shell injection).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# key -> (sbatch option, the pattern a value must match in full, what it looks like)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_GRES_ITEM = r"[A-Za-z0-9_]{1,32}(:[A-Za-z0-9_.-]{1,32})?(:[0-9]{1,4})?"
OPTIONS: Mapping[str, tuple[str, re.Pattern[str], str]] = {
    "partition": ("--partition", _NAME, "a partition name"),
    "account": ("--account", _NAME, "an account name"),
    "qos": ("--qos", _NAME, "a QoS name"),
    "gres": ("--gres", re.compile(f"{_GRES_ITEM}(,{_GRES_ITEM}){{0,7}}"), "e.g. gpu:2"),
    "cpus_per_task": ("--cpus-per-task", re.compile(r"[1-9][0-9]{0,3}"), "a number of CPUs"),
    "mem": ("--mem", re.compile(r"[0-9]{1,9}[KMGT]?"), "e.g. 16G"),
    "time": (
        "--time",
        re.compile(r"([0-9]{1,4}-)?[0-9]{1,6}(:[0-9]{1,2}){0,2}"),
        "minutes, HH:MM:SS or D-HH:MM:SS",
    ),
    "constraint": ("--constraint", re.compile(r"[A-Za-z0-9_&|,.-]{1,128}"), "node features"),
}
# What a task may set itself (its Slurm section); where it runs and who pays stay with the queue.
TASK_KEYS = frozenset({"gres", "cpus_per_task", "mem", "time", "constraint"})
QUEUE_ONLY_KEYS = frozenset({"max_jobs"})  # glue settings in a queue's mapping, not options
TASK_SECTION = "Slurm"


class ResourceError(ValueError):
    """A resource value or key is not allowed; the message names it and where it came from."""


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def check_mapping(
    values: Mapping[str, str], source: str, allowed: frozenset[str]
) -> dict[str, str]:
    """The entries of ``values`` with normalised keys; ResourceError on an unknown key or a
    value that does not match its pattern. Empty values mean "not set" and are dropped."""
    out: dict[str, str] = {}
    for raw_key, raw_value in values.items():
        key, value = _key(raw_key), str(raw_value).strip()
        if key not in allowed:
            raise ResourceError(
                f"{source}: {raw_key!r} is not allowed (allowed: {', '.join(sorted(allowed))})"
            )
        if not value or key in QUEUE_ONLY_KEYS:
            if value:
                out[key] = value
            continue
        _option, pattern, looks = OPTIONS[key]
        if not pattern.fullmatch(value):
            raise ResourceError(f"{source}: {raw_key}={value!r} is not {looks}")
        out[key] = value
    return out


def check_queue_map(queues: Mapping[str, Mapping[str, str]]) -> None:
    """Fail early (at start-up) on a bad queue mapping in the settings."""
    allowed = frozenset(OPTIONS) | QUEUE_ONLY_KEYS
    for queue, values in queues.items():
        mapped = check_mapping(values, f"slurm_queues.{queue}", allowed)
        if "max_jobs" in mapped and not mapped["max_jobs"].isdigit():
            raise ResourceError(f"slurm_queues.{queue}: max_jobs must be a number")


def queue_cap(queue: str, queues: Mapping[str, Mapping[str, str]], default: int) -> int:
    value = str(queues.get(queue, {}).get("max_jobs", "")).strip()
    return int(value) if value.isdigit() else default


def job_options(
    queue: str,
    defaults: Mapping[str, str],
    queues: Mapping[str, Mapping[str, str]],
    task_section: Mapping[str, str],
) -> list[str]:
    """``["--partition=gpu", "--gres=gpu:1", ...]``: defaults < the queue's mapping < the task's
    section (task keys only). ResourceError names the offending value and its source."""
    merged = check_mapping(defaults, "slurm_defaults", frozenset(OPTIONS))
    merged.update(
        check_mapping(
            queues.get(queue, {}), f"slurm_queues.{queue}", frozenset(OPTIONS) | QUEUE_ONLY_KEYS
        )
    )
    merged.update(check_mapping(task_section, f"task section {TASK_SECTION}", TASK_KEYS))
    return [f"{OPTIONS[k][0]}={v}" for k, v in sorted(merged.items()) if k in OPTIONS]
