"""Shared fixtures: a real embedded control plane on an ephemeral port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.server.embedded import EmbeddedServer


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
