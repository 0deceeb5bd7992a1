"""Wiring: from Settings to a running daemon (or one foreground task), embedded server included.

The pipeline (gitpython, the environment builders, the model cache, the log shipper) is imported
with the first task, not at start-up: an agent that waits holds only the serving loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from agent.api.client import ApiClient
from agent.config.settings import Settings
from agent.pipeline.host import HostFacts, ServerAccess
from agent.pipeline.report import Outcome
from agent.supervise.metrics import gpu_count
from agent.worker.connect import (
    remove_embedded_state,
    resolve_access,
    running_embedded,
    write_embedded_state,
)
from agent.worker.daemon import ExitCode
from agent.worker.policy import Slot
from agent.worker.services import make_daemon

if TYPE_CHECKING:
    from agent.pipeline.run import TaskContext
    from agent.pipeline.sandbox import Runtime

log = structlog.get_logger()
BYTES_PER_GB = 1024**3


def host_facts() -> HostFacts:
    return HostFacts(
        hostname=socket.gethostname(),
        gpu_count=gpu_count(),
        agent_python=f"{sys.version_info.major}.{sys.version_info.minor}",
    )


@contextlib.contextmanager
def control_plane(settings: Settings) -> Iterator[ServerAccess]:
    """The configured server, or the embedded one started here for the duration."""
    if not settings.embedded:
        yield resolve_access(settings)
        return
    joined = running_embedded(settings)
    if joined is not None:
        log.info("joining the embedded control plane running here", url=joined.api_host)
        yield joined
        return
    from agent.server.embedded import EmbeddedServer

    db_path = settings.data_dir / "server.db"
    server = EmbeddedServer(db_path, port=settings.embedded_port)
    server.start()
    access = ServerAccess(
        api_host=server.url,
        web_host=server.url,
        files_host=settings.files_host or server.files_host,
        access_key=server.credentials.access_key,
        secret_key=server.credentials.secret_key,
    )
    write_embedded_state(settings, access)
    log.info("embedded control plane started", url=server.url, db=str(settings.data_dir))
    try:
        yield access
    finally:
        remove_embedded_state(settings)
        server.stop()


@dataclass
class Clients:
    api: ApiClient
    shipping: ApiClient


@contextlib.asynccontextmanager
async def clients(settings: Settings, access: ServerAccess) -> AsyncIterator[Clients]:
    api = ApiClient(
        access.api_host,
        access.access_key,
        access.secret_key,
        worker_id=settings.effective_worker_id,
    )
    try:
        yield Clients(api=api, shipping=api.with_retry_for(None))
    finally:
        await api.aclose()


def task_context(
    settings: Settings, access: ServerAccess, c: Clients, runtime: Runtime, host: HostFacts
) -> TaskContext:
    from agent.pipeline.models import ModelCache
    from agent.pipeline.run import TaskContext

    return TaskContext(
        settings=settings,
        api=c.api,
        shipping_api=c.shipping,
        host=host,
        server=access,
        runtime=runtime,
        models=ModelCache(
            settings.cache_dir / "models", int(settings.model_cache_gb * BYTES_PER_GB)
        ),
    )


def task_runtime(settings: Settings) -> Runtime:
    """Where tasks run: containers (docker mode) or venvs on this host."""
    if settings.docker:
        from agent.pipeline.container import DockerRuntime  # the docker SDK only when needed

        return DockerRuntime.connect(settings)  # SandboxUnavailable: the CLI says why
    from agent.pipeline.environment import VenvEnvironment
    from agent.pipeline.sandbox import HostRuntime

    return HostRuntime(VenvEnvironment(), settings.cache_dir)


async def run_daemon(settings: Settings, access: ServerAccess) -> ExitCode:
    from agent.supervise.logs import deliver_leftover_spools

    # Docker mode connects to the engine before serving: an agent that cannot run tasks says so.
    runtime = task_runtime(settings) if settings.docker else None
    host = host_facts()
    async with clients(settings, access) as c:

        @functools.cache
        def context() -> TaskContext:  # built with the first task: the pipeline loads then
            return task_context(settings, access, c, runtime or task_runtime(settings), host)

        # Console lines an earlier run could not deliver (server down, agent killed) go out in
        # the background: they must not delay serving, and they wait for the server if needed.
        leftovers = asyncio.create_task(
            deliver_leftover_spools(settings.spool_dir, c.shipping), name="leftover-spools"
        )

        async def runner(slot: Slot, task_id: str, shutdown: asyncio.Event) -> Outcome:
            from agent.pipeline.run import run_task

            return await run_task(
                context(),
                task_id,
                slot.worker_id,
                slot.gpus,
                shutdown,
                max_retries=slot.max_retries,
            )

        daemon = make_daemon(settings, c.api, runner, gpu_count=host.gpu_count)
        daemon.install_signal_handlers()
        try:
            return await daemon.run()
        finally:
            if not leftovers.done():
                log.warning("leftover console lines not yet delivered; kept for the next start")
            leftovers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leftovers


async def execute_one(settings: Settings, access: ServerAccess, task_id: str) -> Outcome:
    """``conveyor execute --id T``: the same pipeline, one task, in the foreground."""
    from agent.pipeline.run import run_task

    async with clients(settings, access) as c:
        ctx = task_context(settings, access, c, task_runtime(settings), host_facts())
        await c.api.started(task_id, message="started by conveyor execute")
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        # Its own worker id: a daemon on this host restarting meanwhile must not take this task
        # for one of its own lost ones.
        worker = f"{settings.effective_worker_id}:execute"
        return await run_task(ctx, task_id, worker, (), shutdown)
