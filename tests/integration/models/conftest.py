"""Fixtures of the input-model tests: the shared embedded server's client, a cache, files
served over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.api.client import ApiClient
from agent.pipeline.models import ModelCache
from agent.server.embedded import EmbeddedServer
from tests.integration.models.support import MB, Served, serve_files


@pytest.fixture(scope="module")
def http_files() -> Iterator[Served]:
    with serve_files() as served:
        yield served


@pytest.fixture
async def api(shared_server: EmbeddedServer) -> AsyncIterator[ApiClient]:
    creds = shared_server.credentials
    async with ApiClient(
        shared_server.url, creds.access_key, creds.secret_key, retry_for=10
    ) as client:
        yield client


@pytest.fixture
def cache(tmp_path: Path) -> ModelCache:
    return ModelCache(tmp_path / "models", max_bytes=100 * MB)
