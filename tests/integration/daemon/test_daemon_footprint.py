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

# Runs in a fresh interpreter: what `conveyor daemon` imports, then the daemon itself until the
# server lists its worker; prints the loaded modules and exits without waiting for a drain.
PROBE = """
import asyncio, json, os, sys
import agent.cli  # the command line, as the `conveyor` entry point loads it
from agent.api.client import ApiClient
from agent.config.settings import load_settings
from agent.worker.service import control_plane, run_daemon

async def idle(settings, access):
    serving = asyncio.create_task(run_daemon(settings, access))
    async with ApiClient(access.api_host, access.access_key, access.secret_key) as api:
        while not any(w.get("id") == settings.worker_id for w in await api.list_workers()):
            if serving.done():
                raise SystemExit(f"daemon ended: {serving.result()!r}")
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # a few idle polls and a machine sample

async def main(settings, access):
    await asyncio.wait_for(idle(settings, access), 60)
    print(json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)

settings = load_settings()
with control_plane(settings) as access:
    asyncio.run(main(settings, access))
"""

HEAVY = (
    "git",
    "docker",
    "pyhocon",
    "rich",
    "agent.pipeline.plan",
    "agent.pipeline.run",
    "agent.pipeline.source",
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
