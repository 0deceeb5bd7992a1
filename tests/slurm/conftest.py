"""Fixtures for tests on a real Slurm (``scripts/slurm-cluster``): one embedded server and one
``conveyor slurm`` glue per module, jobs named with a prefix of their own.

Without a Slurm that answers (``SLURM_CONF``, else the cluster script's default) these tests are
skipped with the reason; with ``CONVEYOR_REQUIRE_SLURM=1`` (``scripts/test`` sets it once its
cluster is up) they fail instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call
from tests.integration.daemon.support import CONVEYOR, wait_for

DEFAULT_CONF = "/var/lib/conveyor-slurm/etc/slurm.conf"  # scripts/slurm-cluster's default
QUEUE = "slurm"
CAPPED = "capped"  # a queue whose mapping allows 2 jobs in Slurm at once
READY = '"slurm glue ready"'


def slurm_conf() -> str:
    return os.environ.get("SLURM_CONF") or DEFAULT_CONF


def slurm(*args: str, check: bool = True) -> str:
    env = {**os.environ, "SLURM_CONF": slurm_conf()}
    done = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _unavailable(reason: str) -> None:
    if os.environ.get("CONVEYOR_REQUIRE_SLURM") == "1":
        pytest.fail(f"CONVEYOR_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster() -> Path:
    """The Slurm root directory (state, spool, logs) once the controller answers."""
    try:
        slurm("scontrol", "ping")
        idle = slurm("sinfo", "-h", "-o", "%t")
    except (OSError, AssertionError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"no Slurm answers ({exc}); start one with `scripts/slurm-cluster start`")
    if not any(s in idle for s in ("idle", "mix", "alloc")):
        _unavailable(f"the Slurm node is not up ({idle.strip()!r})")
    return Path(slurm_conf()).parent.parent


@pytest.fixture(scope="module")
def server(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path_factory.mktemp("slurm-server") / "server.db", port=0) as srv:
        api_call(srv, "queues.create", {"name": QUEUE})
        api_call(srv, "queues.create", {"name": CAPPED})
        yield srv


@dataclass
class GlueProcess:
    """``conveyor slurm`` as a child process; ``start`` again after ``kill`` (same worker id)."""

    server: EmbeddedServer
    root: Path
    prefix: str
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def log_path(self) -> Path:
        return self.root / "glue.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        before = self.log().count(READY)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [str(CONVEYOR), "slurm", "--queue", QUEUE, "--queue", CAPPED],
                env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.starts += 1

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"glue exited early:\n{self.log()}")
            return self.log().count(READY) > before

        wait_for(ready, 60, "the slurm glue to be ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def glue_env(server: EmbeddedServer, root: Path, cache: Path, prefix: str) -> dict[str, str]:
    data = root / "data"
    job_env = {
        "CONVEYOR_DATA_DIR": str(root / "job-data"),
        "CONVEYOR_CACHE_DIR": str(cache),
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_ABORT_POLL_INTERVAL": "0.2",
        "CONVEYOR_ABORT_GRACE": "2",
        "CONVEYOR_CONFIG": "",
    }
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "CONVEYOR_"))},
        "SLURM_CONF": slurm_conf(),
        "CONVEYOR_API_HOST": server.url,
        "CONVEYOR_ACCESS_KEY": server.credentials.access_key,
        "CONVEYOR_SECRET_KEY": server.credentials.secret_key,
        "CONVEYOR_DATA_DIR": str(data),
        "CONVEYOR_CACHE_DIR": str(cache),
        "CONVEYOR_WORKER_ID": "test-slurm-glue",
        "CONVEYOR_LOG_FORMAT": "json",
        "CONVEYOR_CONFIG": "",
        "CONVEYOR_ABORT_POLL_INTERVAL": "0.2",
        "CONVEYOR_ABORT_GRACE": "2",
        "CONVEYOR_SLURM_POLL_INTERVAL": "0.5",
        "CONVEYOR_SLURM_JOB_PREFIX": prefix,
        "CONVEYOR_SLURM_SHARED_DIR": str(root / "shared"),
        "CONVEYOR_SLURM_CONVEYOR": str(CONVEYOR),
        "CONVEYOR_SLURM_QUEUES": json.dumps({CAPPED: {"max_jobs": "2"}}),
        "CONVEYOR_SLURM_JOB_ENV": ",".join(f"{k}={v}" for k, v in job_env.items()),
    }


@pytest.fixture(scope="module")
def glue(server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlueProcess]:
    root = tmp_path_factory.mktemp("slurm-glue")
    cache = tmp_path_factory.mktemp("slurm-cache")
    prefix = f"cvt{uuid.uuid4().hex[:6]}-"
    proc = GlueProcess(server, root, prefix, env=glue_env(server, root, cache, prefix))
    proc.start()
    yield proc
    proc.stop()

    def ours() -> list[str]:  # the module's jobs still in Slurm (pending, running, completing)
        lines = slurm("squeue", "--noheader", "--format=%i|%j").splitlines()
        return [i for i, _, n in (x.strip().partition("|") for x in lines) if n.startswith(prefix)]

    for job_id in ours():
        slurm("scancel", job_id, check=False)
    # a job leaves squeue once its processes are gone: none outlives the module
    wait_for(lambda: not ours(), 60, "the module's slurm jobs to end")
