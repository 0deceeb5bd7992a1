"""Fixtures for the fault-injection suite (helpers in reliability.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def agent_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (git mirrors, uv) for the session: warm starts after the first task."""
    return tmp_path_factory.mktemp("fault-agent-cache")
