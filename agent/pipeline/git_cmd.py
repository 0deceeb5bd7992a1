"""Running git for the source stage: a private askpass for credentials, no prompts, no ext::
transport, and git's own error line (credentials masked) as the stage's reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import git

from agent.pipeline.source_request import GitCredentials, mask_url, stage_error

LOCAL_TIMEOUT = 600.0  # seconds: clone from the mirror, checkout, apply
_ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$CONVEYOR_GIT_USERNAME" ;;
  *) printf '%s\\n' "$CONVEYOR_GIT_PASSWORD" ;;
esac
"""
_DEFAULT_SSH_COMMAND = "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new"


@contextlib.contextmanager
def git_env(credentials: GitCredentials | None) -> Iterator[dict[str, str]]:
    """Environment for every git command; with credentials, a private askpass script."""
    # Continue after any -c settings the operator passes through GIT_CONFIG_COUNT.
    inherited = os.environ.get("GIT_CONFIG_COUNT", "0")
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": inherited if inherited.isdigit() else "0",
    }
    add_config(env, "protocol.ext.allow", "never")
    if not (os.environ.get("GIT_SSH_COMMAND") or os.environ.get("GIT_SSH")):
        env["GIT_SSH_COMMAND"] = _DEFAULT_SSH_COMMAND
    if credentials is None:
        yield env
        return
    private = Path(tempfile.mkdtemp(prefix="conveyor-askpass-"))  # mode 0700
    try:
        script = private / "askpass.sh"
        script.write_text(_ASKPASS_SCRIPT, encoding="utf-8")
        script.chmod(stat.S_IRWXU)
        env["GIT_ASKPASS"] = str(script)
        env["CONVEYOR_GIT_USERNAME"] = credentials.username
        env["CONVEYOR_GIT_PASSWORD"] = credentials.password
        add_config(env, "credential.helper", "")  # no helper may store or override them
        yield env
    finally:
        shutil.rmtree(private, ignore_errors=True)


def add_config(env: dict[str, str], key: str, value: str) -> None:
    """Pass one ``-c key=value`` through the environment (git >= 2.31)."""
    index = int(env.get("GIT_CONFIG_COUNT", "0"))
    env[f"GIT_CONFIG_KEY_{index}"] = key
    env[f"GIT_CONFIG_VALUE_{index}"] = value
    env["GIT_CONFIG_COUNT"] = str(index + 1)


def git_out(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = LOCAL_TIMEOUT
) -> str:
    """Run ``git args`` in ``cwd``; stdout stripped; GitCommandError on failure."""
    try:
        out = git.Git(str(cwd)).execute(
            ["git", *args], env=dict(env or {}), kill_after_timeout=timeout
        )
    except git.GitCommandNotFound as exc:
        raise stage_error(
            "git is not installed on this agent (the git command was not found)"
        ) from exc
    return str(out).strip()


def git_run(cwd: Path, *args: str, env: Mapping[str, str], what: str) -> None:
    """Like :func:`git_out` for local steps whose failure ends the stage."""
    try:
        git_out(cwd, *args, env=env)
    except git.GitCommandError as exc:
        raise stage_error(f"{what} failed: {first_error(exc, env)}") from exc


def first_error(exc: git.GitCommandError, env: Mapping[str, str]) -> str:
    """git's first ``fatal:``/``error:`` line (else its first line), credentials masked."""
    raw = str(exc.stderr or "")
    raw = re.sub(r"^\s*stderr: '", "", raw).rstrip().removesuffix("'")
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    chosen = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), None)
    text = chosen or (lines[0] if lines else f"git exited with status {exc.status}")
    secret = env.get("CONVEYOR_GIT_PASSWORD", "")
    if secret:
        text = text.replace(secret, "****")
    return mask_url(text)
