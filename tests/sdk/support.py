"""Helpers for the SDK conformance suite: run an SDK script, wait on a task, read it back."""

from __future__ import annotations

import textwrap
from typing import Any

from tests.helpers import api_call, result_of, run_sdk
from tests.integration.daemon.support import console_text, task_doc, wait_final
from tests.sdk.conftest import Plane

__all__ = ["console_text", "run", "sdk_result", "task_doc", "wait_final", "wait_status"]

# Prepended to every script: the RESULT line the tests read back.
PRELUDE = "import json\ndef emit(value):\n    print('RESULT ' + json.dumps(value), flush=True)\n"


def run(plane: Plane, code: str, timeout: float = 180, **env: str) -> Any:
    """Run ``code`` (with ``emit(value)`` available) as a local SDK script; its emitted value."""
    return result_of(
        run_sdk(PRELUDE + textwrap.dedent(code), {**plane.env, **env}, timeout=timeout)
    )


def sdk_result(plane: Plane, code: str, timeout: float = 180) -> Any:
    return run(plane, code, timeout)


def wait_status(plane: Plane, task_id: str, timeout: float = 240) -> dict[str, Any]:
    """The task's document once it has ended (completed, failed or stopped)."""
    return wait_final(plane.server, task_id, timeout=timeout)


def tasks_named(plane: Plane, pattern: str) -> list[dict[str, Any]]:
    data = api_call(
        plane.server,
        "tasks.get_all",
        {"name": pattern, "only_fields": ["id", "name", "status", "parent"], "search_hidden": True},
    )
    tasks: list[dict[str, Any]] = data["tasks"]
    return tasks
