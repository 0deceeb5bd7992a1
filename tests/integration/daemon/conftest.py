"""Fixtures for end-to-end agent tests: real git repositories and a real `conveyor daemon`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer
from tests.integration.daemon.support import Agent, Repo, git, start_agent


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A bare repository served over file:// with a working clone to commit from."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    return Repo(url=bare.as_uri(), work=work)


@pytest.fixture(scope="session")
def agent_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (git mirrors, uv) for the session: warm starts after the first task."""
    return tmp_path_factory.mktemp("agent-cache")


@pytest.fixture
def agent_factory(
    embedded_server: EmbeddedServer, tmp_path: Path, agent_cache: Path
) -> Iterator[Callable[..., Agent]]:
    """Start `conveyor daemon` processes on queues of ``embedded_server``; stopped at teardown."""
    started: list[Agent] = []

    def make(*extra: str, queue: str = "q", env: dict[str, str] | None = None) -> Agent:
        agent = start_agent(
            embedded_server, tmp_path / f"agent-{queue}", agent_cache, queue, *extra, env=env
        )
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop()
