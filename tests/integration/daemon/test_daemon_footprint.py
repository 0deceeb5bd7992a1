"""An idle agent stays light: the real serving loop, once registered, has loaded neither gitpython
nor the docker SDK nor the pipeline's stages (they load with the first task)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from tests.integration.daemon.support import agent_env

# Runs in a fresh interpreter: the `conveyor daemon` command itself (click, as the entry point
# runs it) on the main thread; a watcher thread waits until the server lists the worker, lets it
# idle a moment, prints the loaded modules and ends the process without waiting for a drain.
PROBE = """
import asyncio, json, os, sys, threading, time
import agent.cli
from agent.api.client import ApiClient
from agent.config.settings import load_settings
from agent.worker.connect import ConnectError, resolve_access

async def registered(settings):
    while True:
        try:
            access = resolve_access(settings)  # embedded: once it has written server.json
        except ConnectError:
            await asyncio.sleep(0.05)
            continue
        async with ApiClient(access.api_host, access.access_key, access.secret_key) as api:
            while not any(w.get("id") == settings.worker_id for w in await api.list_workers()):
                await asyncio.sleep(0.05)
        return

def watch():
    asyncio.run(asyncio.wait_for(registered(load_settings()), 60))
    time.sleep(1.0)  # a few idle polls and a machine sample
    print(json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)

threading.Thread(target=watch, daemon=True).start()
agent.cli.main(["daemon"], prog_name="conveyor")
raise SystemExit("the daemon ended before it registered")
"""

HEAVY = (
    "git",
    "docker",
    "pyhocon",
    "rich",
    "agent.pipeline.plan",
    "agent.pipeline.run",
    "agent.pipeline.sandbox",
    "agent.pipeline.source",
    # the web console loads with the first page asked for (agent/server/lazy_routes.py)
    "jinja2",
    "numpy",
    "agent.server.web.routes",
    # uvicorn serves HTTP only (ws="none")
    "websockets",
    "wsproto",
)


def idle_modules(env: dict[str, str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("mode", ["agent-only", "embedded"])
def test_idle_daemon_has_not_loaded_git_docker_or_the_pipeline(
    embedded_server: EmbeddedServer, tmp_path: Path, mode: str
) -> None:
    env = agent_env(embedded_server, tmp_path / "data", tmp_path / "cache", "footprint")
    env["HOME"] = str(tmp_path)  # no ~/clearml.conf of the machine's user
    if mode == "embedded":  # the default: the daemon starts its own control plane
        for name in ("CONVEYOR_API_HOST", "CONVEYOR_ACCESS_KEY", "CONVEYOR_SECRET_KEY"):
            del env[name]
        env["CONVEYOR_EMBEDDED_PORT"] = "0"
    modules = idle_modules(env)
    assert "agent.worker.daemon" in modules  # the probe did run the serving loop
    assert ("agent.server.embedded" in modules) is (mode == "embedded")
    loaded = sorted({m if m in HEAVY else m.split(".")[0] for m in modules} & set(HEAVY))
    assert not loaded, f"an idle daemon imported {loaded}"
