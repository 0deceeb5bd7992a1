"""Input models stored on the embedded control plane's files host: fetched with the API token,
which no other host ever sees."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from agent.api.client import ApiClient
from agent.errors import StageError
from agent.pipeline.console import ListConsole
from agent.pipeline.models import ModelCache, fetch_input_models, files_host_auth
from agent.server.embedded import EmbeddedServer
from tests.helpers import token_for
from tests.integration.models.support import Served, register, serve_files, task_with


def upload(server: EmbeddedServer, name: str, content: bytes) -> str:
    """Store ``content`` on the files host the way the SDK uploads; its download URL."""
    path = f"/models-{uuid.uuid4().hex[:8]}/{name}"
    response = httpx.post(
        server.files_host,
        files={path: (name, content)},
        headers={"Authorization": f"Bearer {token_for(server)}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return server.files_host + path


async def test_a_model_on_the_files_host_is_fetched_with_the_api_token(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache
) -> None:
    content = b"weights on the files host" * 100
    model_id = register(shared_server, upload(shared_server, "w.bin", content))
    task = task_with(base=model_id)

    # Without credentials the files host refuses (the fault: HTTP 401 failed the task).
    with pytest.raises(StageError, match="HTTP 401"):
        await fetch_input_models(api, task, cache, ListConsole())

    auth = files_host_auth(shared_server.files_host, await api.token())
    env = await fetch_input_models(api, task, cache, ListConsole(), headers_for=auth)
    assert Path(env["CONVEYOR_INPUT_MODEL_BASE"]).read_bytes() == content


async def test_the_token_is_not_sent_to_another_host(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, http_files: Served
) -> None:
    uri = http_files.add("elsewhere.bin", b"public weights")
    model_id = register(shared_server, uri)
    auth = files_host_auth(shared_server.files_host, await api.token())

    env = await fetch_input_models(
        api, task_with(base=model_id), cache, ListConsole(), headers_for=auth
    )

    assert Path(env["CONVEYOR_INPUT_MODEL_BASE"]).read_bytes() == b"public weights"
    assert http_files.authorization[uri.removeprefix(http_files.base)] == [""]


async def test_a_redirect_from_the_files_host_elsewhere_drops_the_token(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, http_files: Served
) -> None:
    target = http_files.add("moved.bin", b"moved weights")
    with serve_files() as files_host:
        files_host.redirects["/files/moved.bin"] = target
        model_id = register(shared_server, files_host.base + "/files/moved.bin")
        auth = files_host_auth(files_host.base + "/files", "the-token")

        env = await fetch_input_models(
            api, task_with(base=model_id), cache, ListConsole(), headers_for=auth
        )

        assert files_host.authorization["/files/moved.bin"] == ["Bearer the-token"]
    assert Path(env["CONVEYOR_INPUT_MODEL_BASE"]).read_bytes() == b"moved weights"
    assert http_files.authorization[target.removeprefix(http_files.base)] == [""]
