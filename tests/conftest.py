"""Shared fixtures: a real embedded control plane on an ephemeral port."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import SCRATCH


@pytest.fixture
def embedded_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A fresh server (new database) for one test."""
    with EmbeddedServer(tmp_path / "server.db") as server:
        yield server


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One server for the whole session: for tests that only add their own objects."""
    with EmbeddedServer(tmp_path_factory.mktemp("shared-server") / "server.db") as server:
        yield server


def _leftovers(marks: list[str]) -> list[psutil.Process]:
    """Processes (not this one) whose command line, directory or environment names one of
    ``marks``: things the tests started and should have stopped."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if proc.pid == os.getpid():
            continue
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
            if not any(mark in text for mark in marks):
                text = " ".join(proc.environ().values())
            if any(mark in text for mark in marks):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


# Under pytest-xdist (scripts/check runs `-n 2 --dist loadgroup`) a group runs on one worker, in
# order. A file is its own group, so a module's server and agents are set up once; these folders
# share one set-up (tests/sdk: a session's server and agents), one engine (docker, image), one
# Slurm cluster, or a browser: each is one group.
SHARED_GROUPS = ("sdk", "slurm", "docker", "image", "web", "acceptance")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        top = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else ""
        group = top if top in SHARED_GROUPS else str(path.relative_to(TESTS))
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test may leave a process behind (an agent, a server, a git daemon...): they are
    killed here and the session fails, naming them."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(session.config, "workerinput", None) is not None:
        return
    marks = [str(factory.getbasetemp()), str(SCRATCH)]
    leftovers = _leftovers(marks)
    if not leftovers:
        return
    lines = []
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            lines.append(f"  pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "processes left running by the tests (killed)", red=True)
        for line in lines:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
