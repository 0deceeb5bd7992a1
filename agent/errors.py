"""StageError, the one error that fails a task with a reason a user can act on; SandboxUnavailable.

StageError is raised by the pipeline's stages and by the supervisor under them (a program that
cannot be started), so it lives below both packages: neither imports the other upward for it.
SandboxUnavailable (no docker engine...) is caught by the command line, which must not load the
pipeline to name it.
"""

from __future__ import annotations


class StageError(Exception):
    """A stage could not do its job; ``reason`` becomes the task's ``status_reason``.

    ``reason`` is short and specific, e.g. "git checkout failed: commit abc123 not found in
    https://host/repo.git" or "requirements failed: No solution found for torch==9.9".
    """

    def __init__(self, reason: str, *, stage: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


class SandboxUnavailable(RuntimeError):
    """The configured runtime cannot run tasks here (no docker engine...); says why."""
