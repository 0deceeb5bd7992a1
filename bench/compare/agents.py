"""The two agents under comparison, started the same way against the same server.

``Conveyor`` is this repository's ``conveyor daemon``; ``ClearmlAgent`` is clearml-agent 3.0.3
from its own virtualenv (created once under the bench cache dir), configured by a generated
``clearml.conf``: venv mode (no docker), its own venvs/vcs/pip caches under the run's directory,
pip (its default) as the package manager. Each agent gets a private HOME-like directory:
"cold" means a new directory, "warm" the same one again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil
from filelock import FileLock

from agent.server.embedded import EmbeddedServer
from bench.compare.server import Api

ROOT = Path(__file__).resolve().parents[2]
CONVEYOR = ROOT / ".venv" / "bin" / "conveyor"
CACHE_ROOT = Path(os.environ.get("CONVEYOR_BENCH_CACHE", "~/.cache/conveyor-bench")).expanduser()
CLEARML_AGENT_VERSION = "3.0.3"
CLEARML_VENV = CACHE_ROOT / "clearml-agent-venv"
VENV_TIMEOUT = 600.0
REGISTER_TIMEOUT = 60.0
# Both agents run tasks with this interpreter (the harness's own base Python), and so does the
# "bare" baseline: left to themselves they pick different 3.11 builds on this machine.
TASK_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
STOP_TIMEOUT = 30.0
# Variables of the outer environment that would point an agent elsewhere.
_FOREIGN_PREFIXES = ("CLEARML_", "TRAINS_", "CONVEYOR_", "UV_", "PIP_", "VIRTUAL_ENV")


class AgentUnavailable(RuntimeError):
    """The agent cannot be installed or started here (the message says why)."""


def clean_environ(home: Path) -> dict[str, str]:
    """The outer environment without anything that configures an agent or an installer.

    pip's configuration files are switched off too (``PIP_CONFIG_FILE=/dev/null``): both agents
    install from PyPI only, so neither gets local wheel directories the other does not see.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(HOME=str(home), PIP_CONFIG_FILE=os.devnull, PYTHONUNBUFFERED="1")
    return env


# --- clearml-agent's virtualenv ----------------------------------------------------------------
def _installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('clearml-agent'))"
    done = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_clearml_agent(venv: Path = CLEARML_VENV) -> Path:
    """clearml-agent 3.0.3 in ``venv`` (created and installed once); its executable."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock", timeout=VENV_TIMEOUT):
        if _installed_version(venv) != CLEARML_AGENT_VERSION:
            shutil.rmtree(venv, ignore_errors=True)
            steps = [
                [sys.executable, "-m", "venv", str(venv)],
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    f"clearml-agent=={CLEARML_AGENT_VERSION}",
                ],
            ]
            for step in steps:
                done = subprocess.run(
                    step, capture_output=True, text=True, timeout=VENV_TIMEOUT, check=False
                )
                if done.returncode != 0:
                    shutil.rmtree(venv, ignore_errors=True)
                    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                    raise AgentUnavailable(
                        f"cannot install clearml-agent {CLEARML_AGENT_VERSION}: "
                        f"{' '.join(step[:4])} failed: {' / '.join(tail)}"
                    )
    return venv / "bin" / "clearml-agent"


def private_python(home: Path) -> Path:
    """TASK_PYTHON through a symlink in ``home``.

    clearml-agent 3.0.3 in uv mode creates a virtualenv at "<python_binary>_uv", next to the
    interpreter it is given; pointed at the real one, that lands inside the Python installation.
    """
    link = home / "python" / TASK_PYTHON.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(TASK_PYTHON)
    return link


def clearml_conf(server: EmbeddedServer, home: Path, worker_id: str, package_manager: str) -> str:
    """A clearml.conf for clearml-agent in venv mode with every cache under ``home``."""
    creds = server.credentials
    python = private_python(home)
    (home / "files").mkdir(parents=True, exist_ok=True)  # Task.init checks it is writable
    files = (home / "files").as_uri()
    return f"""
api {{
  api_server: "{server.url}"
  web_server: "{server.url}"
  files_server: "{files}"
  credentials {{ access_key: "{creds.access_key}", secret_key: "{creds.secret_key}" }}
}}
agent {{
  worker_id: "{worker_id}"
  python_binary: "{python}"
  package_manager {{
    type: {package_manager}
    # no pytorch.org lookups: this machine only reaches PyPI
    pytorch_resolve: "none"
  }}
  venvs_dir: "{home}/venvs-builds"
  venvs_cache {{ path: "{home}/venvs-cache", max_entries: 10, free_space_threshold_gb: 0 }}
  vcs_cache {{ enabled: true, path: "{home}/vcs-cache" }}
  pip_download_cache {{ enabled: true, path: "{home}/pip-download-cache" }}
  docker_pip_cache: "{home}/pip-cache"
}}
sdk {{ development {{ default_output_uri: "{files}" }} }}
"""


# --- running agents ----------------------------------------------------------------------------
@dataclass
class Running:
    """One agent process (and, through psutil, the tree it spawns)."""

    kind: str
    worker_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def tree(self) -> list[psutil.Process]:
        """The agent and every live descendant (remembered, so stop() can reap leftovers)."""
        try:
            root = psutil.Process(self.process.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for member in members:
            self.seen.setdefault(member.pid, member)
        return members

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signals: tuple[int, ...]) -> None:
        """Ask the agent to stop (``signals`` in turn), then kill whatever of its tree is left."""
        self.tree()
        for sig in signals:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                time.sleep(0.2)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        for member in self.seen.values():
            try:
                if member.is_running():
                    member.kill()
            except psutil.NoSuchProcess:
                continue


class AgentKind(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def stop_signals(self) -> tuple[int, ...]: ...

    def start(
        self, server: EmbeddedServer, home: Path, queue: str, env: dict[str, str] | None = None
    ) -> Running: ...

    def find_links_env(self, directory: str) -> dict[str, str]:
        """The variables that make this agent's installer look in a local wheel directory."""
        ...


def _wait_registered(api: Api, running: Running) -> None:
    deadline = time.monotonic() + REGISTER_TIMEOUT
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise AgentUnavailable(f"{running.kind} exited at start:\n{running.log()[-3000:]}")
        workers = api("workers.get_all", {}).get("workers", [])
        if any(str(w.get("id", "")).startswith(running.worker_id) for w in workers):
            return
        time.sleep(0.1)
    raise AgentUnavailable(f"{running.kind} did not register within {REGISTER_TIMEOUT} s")


def _spawn(kind: str, worker_id: str, argv: list[str], env: dict[str, str], home: Path) -> Running:
    log_path = home / "agent.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=home
        )
    return Running(kind, worker_id, process, log_path, home)


@dataclass(frozen=True)
class Conveyor:
    name: str = "conveyor"
    stop_signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGTERM)
    worker_id: str = "bench-conveyor"
    extra_env: tuple[tuple[str, str], ...] = ()
    executable: Path = CONVEYOR  # bench/footprint.py measures an installed copy too

    def find_links_env(self, directory: str) -> dict[str, str]:
        return {"UV_FIND_LINKS": directory}  # uv reads neither pip.conf nor PIP_FIND_LINKS

    def start(
        self, server: EmbeddedServer, home: Path, queue: str, env: dict[str, str] | None = None
    ) -> Running:
        home.mkdir(parents=True, exist_ok=True)
        creds = server.credentials
        environ = clean_environ(home)
        environ.update(
            CONVEYOR_API_HOST=server.url,
            CONVEYOR_ACCESS_KEY=creds.access_key,
            CONVEYOR_SECRET_KEY=creds.secret_key,
            CONVEYOR_DATA_DIR=str(home / "data"),
            CONVEYOR_CACHE_DIR=str(home / "cache"),
            CONVEYOR_WORKER_ID=self.worker_id,
            CONVEYOR_LOG_FORMAT="json",
            CONVEYOR_CONFIG="",
            CONVEYOR_PYTHON=str(TASK_PYTHON),
            **dict(self.extra_env),
        )
        argv = [str(self.executable), "daemon", "--queue", queue]
        running = _spawn(self.name, self.worker_id, argv, {**environ, **(env or {})}, home)
        _wait_registered(Api(server), running)
        return running


@dataclass(frozen=True)
class ClearmlAgent:
    name: str = "clearml-agent"
    stop_signals: tuple[int, ...] = (signal.SIGTERM,)
    worker_id: str = "bench-clearml"
    # pip, its default. With "uv", 3.0.3 runs `uv venv` with the interpreter's own path as the
    # venv's and fails (see private_python).
    package_manager: str = "pip"
    executable: Callable[[], Path] = ensure_clearml_agent
    extra_args: tuple[str, ...] = ()  # e.g. ("--services-mode",)

    def find_links_env(self, directory: str) -> dict[str, str]:
        return {"PIP_FIND_LINKS": directory, "UV_FIND_LINKS": directory}

    def start(
        self, server: EmbeddedServer, home: Path, queue: str, env: dict[str, str] | None = None
    ) -> Running:
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "clearml.conf"
        conf.write_text(clearml_conf(server, home, self.worker_id, self.package_manager))
        environ = clean_environ(home)
        environ.update(CLEARML_CONFIG_FILE=str(conf), CLEARML_CPU_ONLY="1", **(env or {}))
        argv = [
            str(self.executable()),
            "daemon",
            "--queue",
            queue,
            "--foreground",
            *self.extra_args,
        ]
        running = _spawn(self.name, self.worker_id, argv, environ, home)
        _wait_registered(Api(server), running)
        return running
