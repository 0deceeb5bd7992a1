"""The batch job of one task: its script, its environment, and the file that hands it the secret.

The control plane's secret key never appears on a command line, in the script Slurm stores or
in the job's environment: the glue writes it to a 0600 file in the shared directory and passes
only the file's path (``CONVEYOR_SLURM_SECRET_FILE``); the script reads it into
``conveyor execute``'s own environment and deletes the file before anything else runs.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from agent.pipeline.host import ServerAccess

SECRET_FILE_VAR = "CONVEYOR_SLURM_SECRET_FILE"
# The glue's own variables a job inherits (everything else, its CONVEYOR_* and CLEARML_* settings
# and secrets included, stays behind).
PASSED_THROUGH = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "SLURM_CONF")


def batch_script(conveyor: str, task_id: str, attempt: int) -> str:
    return "\n".join(
        [
            "#!/bin/bash",
            f"# conveyor task {task_id}, attempt {attempt} (docs/slurm.md)",
            "set -eu",
            f'secret_file="${{{SECRET_FILE_VAR}:?}}"',
            'CONVEYOR_SECRET_KEY="$(cat -- "$secret_file")"',
            'rm -f -- "$secret_file"',
            f"unset {SECRET_FILE_VAR}",
            "export CONVEYOR_SECRET_KEY",
            f"exec {shlex.quote(conveyor)} execute --id {shlex.quote(task_id)}",
            "",
        ]
    )


def job_env(
    access: ServerAccess,
    secret_file: Path,
    extra: Mapping[str, str],
    environ: Mapping[str, str],
    max_retries: int,
) -> dict[str, str]:
    """sbatch's whole environment (``--export=ALL`` of exactly this): where the server is, the
    secret file's path, the operator's ``slurm_job_env``, the queue's retry cap (so that
    ``conveyor execute`` records and applies the glue's); no secret."""
    env = {k: environ[k] for k in PASSED_THROUGH if k in environ}
    env.update(extra)
    env.update(
        {
            "CONVEYOR_MAX_RETRIES": str(max_retries),
            "CONVEYOR_API_HOST": access.api_host,
            "CONVEYOR_WEB_HOST": access.web_host,
            "CONVEYOR_FILES_HOST": access.files_host,
            "CONVEYOR_ACCESS_KEY": access.access_key,
            SECRET_FILE_VAR: str(secret_file),
        }
    )
    return {k: v for k, v in env.items() if v}


def write_secret(directory: Path, name: str, secret: str) -> Path:
    """``<directory>/<name>.key``, mode 0600 from its creation (the directory 0700)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{name}.key"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return path
