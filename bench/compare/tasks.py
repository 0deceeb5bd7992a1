"""The tasks both agents run (literal scripts), and how the harness submits and watches them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.compare.server import Api, Recorder

FINAL = ("completed", "failed", "stopped")
POLL = 0.02  # seconds between the harness's looks at the server
T = TypeVar("T")

FIRST_LINE = "import time\nprint('T0', repr(time.time()), flush=True)\n"

TORCH_SCRIPT = FIRST_LINE + "import torch\nprint('torch', torch.__version__, flush=True)\n"

# Every line carries its index and the time it was printed: the server side can tell what is
# missing and how late each line arrived. Printed one line at a time (the agents run python -u).
LOG_SCRIPT = """\
import sys, time
n = {lines}
rate = {rate}  # lines per second; 0: as fast as print goes
now = time.time
start = time.perf_counter()
print('T0', repr(now()), flush=True)
for i in range(n):
    print('L', i, now())
    if rate and i % 1000 == 999:
        ahead = start + (i + 1) / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
print('WALL', time.perf_counter() - start, now(), flush=True)
"""


def log_script(lines: int, rate: int = 0) -> str:
    return LOG_SCRIPT.format(lines=lines, rate=rate)


# The task's process starts a child, which starts a grandchild; all sleep. Abort must end all
# three. Each prints its pid.
ABORT_SCRIPT = """\
import os, subprocess, sys, time
grandchild = "import os, time; print('PID', os.getpid(), flush=True); time.sleep(3600)"
child = (
    "import os, subprocess, sys, time; print('PID', os.getpid(), flush=True); "
    f"subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(3600)"
)
print('PID', os.getpid(), flush=True)
subprocess.Popen([sys.executable, '-c', child])
time.sleep(3600)
"""

# The same three processes under a clearml SDK script (Task.init first): the SDK swallows SIGTERM.
SDK_REQUIREMENTS = ("clearml==2.1.12",)
ABORT_SDK_SCRIPT = (
    "from clearml import Task\n"
    "Task.init(project_name='bench', task_name='abort an SDK script')\n" + ABORT_SCRIPT
)

PACKAGES_3 = ("idna==3.20", "six==1.17.0", "tqdm==4.70.1")
PACKAGES_30 = (
    "attrs==26.1.0",
    "beautifulsoup4==4.15.0",
    "blinker==1.9.0",
    "certifi==2026.10.18",
    "click==8.5.1",
    "decorator==5.3.1",
    "docutils==0.23",
    "flask==3.1.3",
    "idna==3.20",
    "itsdangerous==2.2.0",
    "jinja2==3.1.6",
    "markdown-it-py==4.3.0",
    "mdurl==0.1.2",
    "more-itertools==11.2.1",
    "packaging==26.3",
    "pygments==2.21.0",
    "pyparsing==3.3.3",
    "python-dateutil==4.0.0",
    "pytz==2026.6",
    "rich==15.0.0",
    "six==1.17.0",
    "soupsieve==2.10",
    "tabulate==0.10.0",
    "toml==0.10.2",
    "tqdm==4.70.1",
    "typing-extensions==4.16.0",
    "tzdata==2026.6",
    "urllib3==2.8.0",
    "werkzeug==3.1.9",
    "zipp==4.1.2",
)
TORCH_WHEELS = "/opt/wheels"
# The CPU wheel exists only in TORCH_WHEELS, which each agent's installer is pointed at through
# its environment (Conveyor/uv: UV_FIND_LINKS; clearml-agent/pip: PIP_FIND_LINKS). A
# "--find-links" line in the requirements does not work for both: clearml-agent 3.0.3 drops it
# ("Private repos not supported. Skipping.") and then installs the CUDA build from PyPI. The
# local version pin makes any other build fail loudly instead of being measured.
TORCH_REQUIREMENTS = ("torch==2.13.0+cpu",)
TORCH_VERSION = "torch 2.13.0+cpu"

_T0 = re.compile(r"^T0 (\d+\.\d+)", re.MULTILINE)
_PID = re.compile(r"^PID (\d+)", re.MULTILINE)
_WALL = re.compile(r"WALL (\d+\.\d+(?:e-?\d+)?) (\d+\.\d+)")


def script(text: str, name: str, requirements: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"diff": text, "entry_point": name, "working_dir": "."}
    if requirements:
        out["requirements"] = {"pip": "\n".join(requirements) + "\n"}
    return out


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass(frozen=True)
class Submitted:
    task_id: str
    enqueued: float  # time.time() just before tasks.enqueue


def submit(api: Api, queue_id: str, name: str, body: dict[str, Any]) -> Submitted:
    task_id = str(api("tasks.create", {"name": name, "type": "training", "script": body})["id"])
    enqueued = time.time()
    api("tasks.enqueue", {"task": task_id, "queue": queue_id})
    return Submitted(task_id, enqueued)


def status(api: Api, task_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = api(
        "tasks.get_all", {"id": [task_id], "only_fields": ["status", "status_reason"]}
    )["tasks"][0]
    return doc


def wait_final(api: Api, task_id: str, timeout: float) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        doc = status(api, task_id)
        return doc if doc.get("status") in FINAL else None

    return wait_for(final, timeout, f"task {task_id} to end")


def latest_log(api: Api, task_id: str, events: int = 200) -> str:
    data = api(
        "events.get_task_log",
        {"task": task_id, "batch_size": events, "navigate_earlier": True, "order": "asc"},
    )
    return "\n".join(str(e.get("msg", "")) for e in data["events"])


def all_log_events(api: Api, task_id: str, batch: int = 10_000) -> Iterator[dict[str, Any]]:
    """Every stored log event of the task, in storage order."""
    scroll: str | None = None
    while True:
        body: dict[str, Any] = {"task": task_id, "event_type": "log", "batch_size": batch}
        if scroll:
            body["scroll_id"] = scroll
        data = api("events.get_task_events", body)
        yield from data["events"]
        if data["returned"] < batch:
            return
        scroll = data["scroll_id"]


def full_log(api: Api, task_id: str) -> str:
    return "\n".join(str(e.get("msg", "")) for e in all_log_events(api, task_id))


def t0_of(text: str) -> float | None:
    found = _T0.search(text)
    return float(found.group(1)) if found else None


def pids_of(text: str) -> list[int]:
    return [int(p) for p in _PID.findall(text)]


def wall_of(text: str) -> tuple[float, float] | None:
    """(the log script's own wall time, the time it ended) from its last line."""
    found = _WALL.findall(text)
    return (float(found[-1][0]), float(found[-1][1])) if found else None


class TaskFailed(RuntimeError):
    """A benchmark task did not do what it should (the message has its status and log)."""


@dataclass(frozen=True)
class Started:
    """A task that reached its first script line."""

    task_id: str
    enqueued: float
    claimed: float | None  # the agent's first tasks.started, as the server received it
    first_line: float  # the script's own clock at its first statement
    visible: float  # when the harness first saw that line on the server


def run_until_first_line(
    api: Api, recorder: Recorder, queue_id: str, name: str, body: dict[str, Any], timeout: float
) -> Started:
    sub = submit(api, queue_id, name, body)

    def seen() -> float | None:
        found = t0_of(latest_log(api, sub.task_id))
        if found is None and status(api, sub.task_id).get("status") in FINAL:
            found = t0_of(full_log(api, sub.task_id))  # it may have arrived meanwhile
            if found is None:
                raise TaskFailed(describe_failure(api, sub.task_id))
        return found

    first = wait_for(seen, timeout, f"the first line of {sub.task_id}")
    visible = time.time()
    claimed = recorder.first_status("tasks.started", sub.task_id)
    return Started(sub.task_id, sub.enqueued, claimed, first, visible)


def describe_failure(api: Api, task_id: str, tail: int = 3000) -> str:
    doc = status(api, task_id)
    return (
        f"task {task_id} ended {doc.get('status')} ({doc.get('status_reason', '')}); "
        f"log tail: {json.dumps(latest_log(api, task_id)[-tail:])}"
    )
