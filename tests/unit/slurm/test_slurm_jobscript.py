"""The batch script and environment of a job carry the secret file's path, never the secret."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from agent.pipeline.host import ServerAccess
from agent.slurm.jobscript import SECRET_FILE_VAR, batch_script, job_env, write_secret

ACCESS = ServerAccess("http://h:8008", "http://h:8008", "http://h:8008/files", "AK", "S3CR3T")


def test_script_and_environment_hold_no_secret(tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "secrets", "conveyor-t-1", ACCESS.secret_key)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    script = batch_script("/shared/venv/bin/conveyor", "t1", 1)
    extra = {"CONVEYOR_CACHE_DIR": "/scratch", "CONVEYOR_MAX_RETRIES": "9"}
    env = job_env(ACCESS, secret, extra, {
        "PATH": "/usr/bin", "CONVEYOR_SECRET_KEY": "S3CR3T", "CLEARML_API_SECRET_KEY": "S3CR3T",
    }, max_retries=0)  # fmt: skip
    assert "S3CR3T" not in script and "S3CR3T" not in "".join(env.values())
    assert env[SECRET_FILE_VAR] == str(secret) and env["CONVEYOR_CACHE_DIR"] == "/scratch"
    # the queue's retry cap reaches `conveyor execute`, over the operator's job variables
    assert env["CONVEYOR_MAX_RETRIES"] == "0"
    assert "exec /shared/venv/bin/conveyor execute --id t1" in script


def test_the_script_hands_the_secret_over_and_deletes_the_file(tmp_path: Path) -> None:
    """Run the script with a stand-in conveyor that prints what it received."""
    fake = tmp_path / "conveyor"
    fake.write_text(
        '#!/bin/sh\necho "key=$CONVEYOR_SECRET_KEY file=${CONVEYOR_SLURM_SECRET_FILE:-}"\n'
    )
    fake.chmod(0o755)
    secret = write_secret(tmp_path / "secrets", "job", "S3CR3T")
    done = subprocess.run(
        ["bash", "-c", batch_script(str(fake), "t1", 1)],
        env={"PATH": "/usr/bin:/bin", SECRET_FILE_VAR: str(secret)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "key=S3CR3T file="
    assert not secret.exists()
