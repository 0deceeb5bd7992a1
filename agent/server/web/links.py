"""The links the clearml SDK prints (and ClearML users bookmark), mapped to our task pages."""

from __future__ import annotations

import re

TABS = (
    "execution", "configuration", "artifacts", "console", "scalars", "plots", "samples", "info",
)  # fmt: skip

TAB_TITLES = {"artifacts": "models & artifacts", "samples": "debug samples"}

# /projects/<pid>/tasks/<tid>/output/log (clearml 2.x), /projects/<pid>/experiments/<tid>/...
# (older SDKs, pipelines), /datasets/simple/<pid>/experiments/<tid>, /pipelines/<pid>/...
_TASK_LINK = re.compile(
    r"^/(?:projects|datasets|pipelines)/(?:.+/)?(?:tasks|experiments)/"
    r"(?P<task>[A-Za-z0-9_-]{1,64})(?:/(?P<tail>.*))?$"
)
# The first path component after the task id (ClearML's tab names) → our tab.
_TAIL_TAB = {
    "output": "console",
    "log": "console",
    "execution": "execution",
    "hyper-params": "configuration",
    "configuration": "configuration",
    "artifacts": "artifacts",
    "models": "artifacts",
    "info-output": "info",
    "general": "info",
}
_OUTPUT_TAB = {"log": "console", "metrics": "scalars", "plots": "plots", "debugImages": "samples"}


def tab_for_tail(tail: str) -> str:
    """Our tab for a ClearML link's tail (``output/log``, ``output/metrics/scalar``, ...)."""
    parts = [p for p in tail.split("/") if p]
    if not parts:
        return "execution"
    if parts[0] == "output" and len(parts) > 1:
        return _OUTPUT_TAB.get(parts[1], "console")
    return _TAIL_TAB.get(parts[0], "info")


def task_link_target(path: str) -> str | None:
    """``/tasks/<id>/<tab>`` for a ClearML-style task link, None if ``path`` is not one."""
    match = _TASK_LINK.match(path)
    if match is None:
        return None
    return f"/tasks/{match['task']}/{tab_for_tail(match['tail'] or '')}"
