"""Docker mode: every task in a container of its image, nothing of the agent installed there.

:class:`DockerRuntime` (one per agent) connects to the engine through the docker SDK, removes the
containers an earlier run of this agent left behind (they carry its worker id as a label: an
agent killed with SIGKILL cannot remove its own) and opens a :class:`ContainerSandbox` per task:

- ``prepare`` (the environment stage, in a worker thread):
  1. the image, by the pull policy (``missing``, ``always``, ``never``);
  2. the container, created *holding*: its first process (``/bin/sh`` under docker's init) waits
     on a FIFO in the task dir, so that the environment is built in the very container the task
     then runs in. Mounted at their host paths: the task dir (checkout, venv, configuration
     files) and uv's cache; read-only: the uv binary (at ``/opt/conveyor/bin/uv``), the input
     model cache and the extra CA bundle; plus the volumes the task's arguments were allowed.
     Also: the task's environment, labels (worker, task), a GPU device request for the
     allocated GPUs, the options the task's ``container.arguments`` were allowed
     (:mod:`agent.pipeline.docker_plan`);
  3. ``container.setup_shell_script``, executed in it (its output in the task's console);
  4. the venv, built by the environment stage's logic in the container
     (:mod:`agent.pipeline.docker_env`), or with ``--run-as-is`` the image's Python as it is;
- ``run``: the task's command line goes to ``task.sh``; :mod:`agent.supervise.container`
  attaches to the output, releases the hold and supervises the container to its end;
- when the sandbox closes (after the task's report): the container is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import structlog

from agent.config.settings import Settings
from agent.errors import SandboxUnavailable, StageError
from agent.pipeline.console import Console
from agent.pipeline.docker_create import GO_FIFO, MODELS_DIR, TASK_SCRIPT, create_args
from agent.pipeline.docker_env import as_is, prepare_in_container
from agent.pipeline.docker_plan import LABEL_WORKER, ContainerPlan
from agent.pipeline.environment import UV_CACHE, PreparedEnvironment, default_uv
from agent.pipeline.installers import INSTALL_TIMEOUT
from agent.pipeline.plan import Plan
from agent.pipeline.sandbox import Ending
from agent.pipeline.source_request import SourceResult
from agent.supervise.container import (
    collect_exec_output,
    engine_reason,
    remove_container,
    run_container,
)
from agent.supervise.process import AbortSignal, LineSink
from agent.supervise.spool import SpoolError

log = structlog.get_logger()

STAGE = "environment"
CONTROL_DIR = ".conveyor"  # in the task dir: the hold FIFO, the task's command line
SETUP_SCRIPT = "setup.sh"
# setup_shell_script runs with bash when the image has it (ClearML's scripts assume bash).
RUN_SETUP = 'if command -v bash >/dev/null 2>&1; then exec bash "$0"; else exec sh "$0"; fi'
SETUP_TIMEOUT = 3600.0  # seconds for container.setup_shell_script
RELEASE_TIMEOUT = 30.0  # seconds for the holding process to take the word
RELEASE_POLL_S = 0.005
EXEC_EXIT_WAIT = 5.0  # seconds for an exec's exit code to appear after its output ended
API_TIMEOUT = 300  # seconds for one engine request (removing a big container can be slow)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DockerRuntime:
    """Tasks in containers (see the module docstring); one per agent process."""

    def __init__(self, client: Any, settings: Settings, uv: Path) -> None:
        self.client = client
        self.settings = settings
        self.uv = uv

    @classmethod
    def connect(cls, settings: Settings, clean: bool = True) -> DockerRuntime:
        """Reach the engine and (``clean``) remove an earlier run's containers; raises
        SandboxUnavailable if the engine cannot be reached."""
        uv = Path(settings.docker_uv) if settings.docker_uv else default_uv()
        if uv is None or not uv.is_file():
            raise SandboxUnavailable(
                f"docker mode needs a uv binary to mount into containers; {uv or 'none'} "
                "is not one (install the uv package or set docker_uv)"
            )
        where = settings.docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
        try:
            # Every running task holds two connections (its output, its wait) for its lifetime.
            options = {"timeout": API_TIMEOUT, "max_pool_size": max(10, 4 * settings.slots)}
            if settings.docker_host:
                client = docker.DockerClient(base_url=settings.docker_host, **options)
            else:
                client = docker.from_env(**options)
            client.ping()
        except (docker.errors.DockerException, OSError) as exc:
            raise SandboxUnavailable(
                f"docker mode: cannot reach the docker engine at {where}: {engine_reason(exc)}"
            ) from exc
        runtime = cls(client, settings, uv.absolute())
        if clean:
            runtime.remove_leftovers()
        return runtime

    def remove_leftovers(self) -> int:
        """Remove containers labelled with this agent's worker id (a killed run's)."""
        label = f"{LABEL_WORKER}={self.settings.effective_worker_id}"
        removed = 0
        # sparse: no inspection of each one (a container being removed would fail it)
        for container in self.client.containers.list(
            all=True, sparse=True, filters={"label": label}
        ):
            log.warning("removing a leftover task container", container=container.short_id)
            remove_container(container)
            removed += 1
        return removed

    @contextlib.asynccontextmanager
    async def sandbox(self, task_id: str) -> AsyncIterator[ContainerSandbox]:
        box = ContainerSandbox(self)
        try:
            yield box
        finally:
            # Also when the task is cancelled: the removal goes on even if we stop waiting.
            await asyncio.shield(box.close())


class ContainerSandbox:
    """One task's container (see the module docstring)."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.runtime = runtime
        self.client = runtime.client
        self.container: Any = None
        self._lock = threading.Lock()  # the stage thread creates, close() removes
        self._closed = False
        self._plan: ContainerPlan | None = None
        self._control = Path()
        self._prepared: PreparedEnvironment | None = None

    # --- the environment stage (a worker thread) ---------------------------------------------
    def prepare(self, plan: Plan, source: SourceResult, console: Console) -> PreparedEnvironment:
        if plan.container is None:
            raise StageError("docker mode without a container plan", stage=STAGE)
        self._plan = plan.container
        cache_dir = self.runtime.settings.cache_dir.absolute()
        request = dataclasses.replace(plan.environment, source_root=source.root)
        try:
            image = self._image(plan.container, console)
            self._start(plan, plan.container, image, console)
            if plan.container.setup_script:
                self._setup(plan.container.setup_script, console)
            if plan.container.run_as_is:
                env = as_is(request, run=self.exec, cache_dir=cache_dir, console=console)
            else:
                env = prepare_in_container(
                    request,
                    run=self.exec,
                    task_dir=plan.task_dir,
                    cache_dir=cache_dir,
                    image_id=image.id,
                    console=console,
                    timeout=INSTALL_TIMEOUT,
                )
        except docker.errors.DockerException as exc:
            raise StageError(f"docker engine: {engine_reason(exc)}", stage=STAGE) from exc
        except OSError as exc:  # disk full, permissions, or the engine's connection
            raise StageError(f"could not create the container: {exc}", stage=STAGE) from exc
        self._prepared = env
        return env

    def _image(self, cplan: ContainerPlan, console: Console) -> Any:
        ref = cplan.image
        try:
            local = self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            local = None
        if local is not None and cplan.pull != "always":
            return local
        if cplan.pull == "never":
            raise StageError(
                f"image {ref} not found locally and could not be pulled: pulling is disabled "
                "(docker_pull = never)",
                stage=STAGE,
            )
        console.info(f"image {ref}: pulling")
        started = time.monotonic()
        try:
            pulled = self.client.images.pull(ref)
        except (docker.errors.DockerException, OSError) as exc:
            if local is None:
                raise StageError(
                    f"image {ref} not found locally and could not be pulled: {engine_reason(exc)}",
                    stage=STAGE,
                ) from exc
            console.info(f"image {ref}: pull failed ({engine_reason(exc)}); using the local copy")
            return local
        console.info(f"image {ref}: pulled in {time.monotonic() - started:.1f} s")
        return pulled

    def _start(self, plan: Plan, cplan: ContainerPlan, image: Any, console: Console) -> None:
        self._control = plan.task_dir.absolute() / CONTROL_DIR
        self._control.mkdir(parents=True, exist_ok=True)
        fifo = self._control / GO_FIFO
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        settings = self.runtime.settings
        for shared in (UV_CACHE, MODELS_DIR):  # bind mount sources must exist
            (settings.cache_dir.absolute() / shared).mkdir(parents=True, exist_ok=True)
        kwargs = create_args(plan, cplan, image.id, settings, self.runtime.uv, self._control)
        with self._lock:
            if self._closed:
                raise StageError("the task ended before its container was created", stage=STAGE)
            self.container = self.client.containers.create(**kwargs)
        self.container.start()
        gpus = ",".join(map(str, cplan.gpus)) or "none"
        console.info(
            f"container {self.container.name} from {cplan.image} ({image.short_id}), "
            f"network {cplan.network}, gpus {gpus}"
        )

    @property
    def _script_path(self) -> str:
        return str(self._control / TASK_SCRIPT)

    def _setup(self, script: str, console: Console) -> None:
        path = self._control / SETUP_SCRIPT
        path.write_text(script, encoding="utf-8")
        console.info("setup_shell_script: running in the container")
        started = time.monotonic()
        done = self.exec(
            ["/bin/sh", "-c", RUN_SETUP, str(path)],
            env={},
            timeout=SETUP_TIMEOUT,
            what="setup_shell_script",
            on_line=lambda line, level: (console.error if level == "error" else console.info)(
                f"setup: {line}"
            ),
        )
        if done.returncode != 0:
            raise StageError(
                f"container.setup_shell_script failed: exit code {done.returncode} "
                "(its output is in the console)",
                stage=STAGE,
            )
        console.info(f"setup_shell_script: done in {time.monotonic() - started:.1f} s")

    # --- running commands in the container -----------------------------------------------------
    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        what: str,
        on_line: Callable[[str, str], None] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container to its end; past ``timeout`` the container is killed
        (an exec cannot be) and the stage fails."""
        api = self.client.api
        exec_id = api.exec_create(self.container.id, list(argv), environment=dict(env))["Id"]
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            with contextlib.suppress(docker.errors.APIError):
                self.container.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            stdout, stderr = collect_exec_output(
                api.exec_start(exec_id, stream=True, demux=True), on_line
            )
        finally:
            timer.cancel()
        if timed_out.is_set():
            raise StageError(f"{what or argv[0]} timed out after {timeout:.0f} s", stage=STAGE)
        code = self._exec_exit_code(exec_id)
        return subprocess.CompletedProcess(list(argv), code, stdout, stderr)

    def _exec_exit_code(self, exec_id: str) -> int:
        deadline = time.monotonic() + EXEC_EXIT_WAIT
        while True:
            state = self.client.api.exec_inspect(exec_id)
            if not state.get("Running") or time.monotonic() > deadline:
                code = state.get("ExitCode")
                return int(code) if code is not None else -1
            time.sleep(RELEASE_POLL_S)

    # --- supervise ---------------------------------------------------------------------------
    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        sink: LineSink,
        abort: AbortSignal,
        grace: float,
        timeout: float | None,
        on_start: Callable[[int], None],
        stop_signals: Sequence[signal.Signals] = (signal.SIGTERM,),
    ) -> Ending:
        assert self._plan is not None and self._prepared is not None, "prepare() first"
        self._write_task_script(argv, cwd, env)
        try:
            ended = await run_container(
                self.container,
                release=self._release,
                sink=sink,
                abort=abort,
                grace=grace,
                timeout=timeout,
                on_start=on_start,
                stop_signals=stop_signals,
            )
        except SpoolError:
            raise  # the task's log cannot be kept: the pipeline reports that
        except (docker.errors.DockerException, OSError) as exc:  # the engine went away
            raise StageError(
                f"docker engine failed during the task: {engine_reason(exc)}", stage="supervise"
            ) from exc
        cause = ""
        if ended.oom_killed and not ended.info.succeeded:
            limit = self._plan.options.memory
            cause = f"out of memory (limit {limit})" if limit else "out of memory"
        return Ending(ended.info, cause)

    def _write_task_script(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> None:
        """The task's command line, exec'd by the holding process (mode 0600: it holds the
        task's credentials, like the environment of a process on the host)."""
        assert self._plan is not None and self._prepared is not None
        lines = ["# the task's command line, written by the conveyor agent"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items() if _ENV_NAME.match(k)]
        if not self._plan.run_as_is:
            venv = str(self._prepared.venv)
            lines.append(f'export PATH={shlex.quote(venv + "/bin")}:"$PATH"')
            lines.append(f"export VIRTUAL_ENV={shlex.quote(venv)}")
        lines.append(f"cd {shlex.quote(str(cwd))} || exit 126")
        lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
        fd = os.open(self._script_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def _release(self) -> None:
        """Give the holding process its word (blocking: called in a thread)."""
        fifo = self._control / GO_FIFO
        deadline = time.monotonic() + RELEASE_TIMEOUT
        next_check = time.monotonic() + 1.0
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: nobody reads it (yet)
                    raise StageError(f"cannot start the task: {exc}", stage="supervise") from exc
            now = time.monotonic()
            if now > next_check:
                if not self._running():
                    now = deadline + 1
                next_check = now + 1.0
            if now > deadline:
                raise StageError(
                    "the container exited before its task started (does the image have /bin/sh?)",
                    stage="supervise",
                )
            time.sleep(RELEASE_POLL_S)
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)

    def _running(self) -> bool:
        self.container.reload()
        return bool(self.container.status == "running")

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            container = self.container
        if container is not None:
            await asyncio.to_thread(remove_container, container)
