"""Input models against the real embedded server: resolved, fetched (file:// and http:// from a
local http.server), verified, recorded, cached, evicted, extracted."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.api.client import ApiClient
from agent.errors import StageError
from agent.pipeline.console import ListConsole
from agent.pipeline.models import ModelCache, fetch_input_models, redact
from agent.pipeline.models import fetch as models_fetch
from agent.server.embedded import EmbeddedServer
from tests.helpers import wait_for
from tests.integration.models.support import (
    MB,
    WAIT,
    Served,
    local_file,
    recorded_sha,
    register,
    sha,
    task_with,
)

# --- tests ---------------------------------------------------------------------------------------


async def test_file_model_fetched_checksum_recorded_then_a_cache_hit(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, tmp_path: Path
) -> None:
    content = b"weights" * 1000
    model_id = register(shared_server, local_file(tmp_path, "best.pt", content).as_uri())
    console = ListConsole()

    env = await fetch_input_models(api, task_with(base=model_id), cache, console)

    path = Path(env["CONVEYOR_INPUT_MODEL_BASE"])
    assert env["CONVEYOR_INPUT_MODEL"] == str(path)
    assert path.name == "best.pt" and path.read_bytes() == content
    assert path.is_relative_to(cache.root)
    assert recorded_sha(shared_server, model_id) == sha(content)
    assert "sha256 recorded on the model" in console.text()
    assert "fetched file://" in console.text()

    again = ListConsole()
    env2 = await fetch_input_models(api, task_with(base=model_id), cache, again)
    assert env2["CONVEYOR_INPUT_MODEL_BASE"] == str(path)
    assert "cache hit" in again.text() and "recorded" not in again.text()


async def test_http_model_verified_against_recorded_sha256_and_cached(
    api: ApiClient,
    shared_server: EmbeddedServer,
    cache: ModelCache,
    http_files: Served,
) -> None:
    content = b"\x00\x01model" * 50_000
    uri = http_files.add("model.safetensors", content)
    model_id = register(shared_server, uri, sha256=sha(content).upper())  # case does not matter
    path_on_server = uri.removeprefix(http_files.base)

    console = ListConsole()
    env = await fetch_input_models(api, task_with(weights=model_id), cache, console)
    path = Path(env["CONVEYOR_INPUT_MODEL_WEIGHTS"])
    assert path.read_bytes() == content
    assert "verified" in console.text()
    assert http_files.hits[path_on_server] == 1

    second = ModelCache(cache.root, cache.max_bytes)  # another agent on the same machine
    env2 = await fetch_input_models(api, task_with(weights=model_id), second, ListConsole())
    assert env2["CONVEYOR_INPUT_MODEL_WEIGHTS"] == str(path)
    assert http_files.hits[path_on_server] == 1  # no second download


async def test_checksum_mismatch_fails_with_a_clear_reason_and_caches_nothing(
    api: ApiClient,
    shared_server: EmbeddedServer,
    cache: ModelCache,
    http_files: Served,
) -> None:
    uri = http_files.add("tampered.bin", b"not what was recorded")
    model_id = register(shared_server, uri, sha256=sha(b"the original"))
    with pytest.raises(StageError) as caught:
        await fetch_input_models(api, task_with(base=model_id), cache, ListConsole())
    reason = caught.value.reason
    assert reason.startswith(f"input model base ({model_id}): checksum mismatch")
    assert sha(b"the original")[:12] in reason and sha(b"not what was recorded")[:12] in reason
    assert cache.usage() == (0, [])
    assert not any((cache.root / "tmp").iterdir())


async def test_two_models_fetched_concurrently_and_first_one_is_the_default(
    api: ApiClient,
    shared_server: EmbeddedServer,
    cache: ModelCache,
    http_files: Served,
    tmp_path: Path,
) -> None:
    a = register(shared_server, local_file(tmp_path, "a.bin", b"A").as_uri())
    b = register(shared_server, http_files.add("b.bin", b"B"))
    env = await fetch_input_models(
        api, task_with(**{"encoder-v2": a, "decoder": b}), cache, ListConsole()
    )
    assert Path(env["CONVEYOR_INPUT_MODEL_ENCODER_V2"]).read_bytes() == b"A"
    assert Path(env["CONVEYOR_INPUT_MODEL_DECODER"]).read_bytes() == b"B"
    assert env["CONVEYOR_INPUT_MODEL"] == env["CONVEYOR_INPUT_MODEL_ENCODER_V2"]


async def test_least_recently_used_entries_are_evicted_beyond_the_bound(
    api: ApiClient, shared_server: EmbeddedServer, tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "small", max_bytes=int(2.5 * MB))
    ids = {
        n: register(shared_server, local_file(tmp_path, f"{n}.bin", n.encode() * MB).as_uri())
        for n in "abc"
    }
    paths: dict[str, str] = {}
    for name in ("a", "b", "a", "c"):  # a is used again after b: b is the least recent
        task = task_with(m=ids[name])
        paths[name] = (await fetch_input_models(api, task, cache, ListConsole()))[
            "CONVEYOR_INPUT_MODEL"
        ]
        cache.release(task.id)
    total, keys = cache.usage()
    assert total == 2 * MB
    assert keys == [sha(b"a" * MB), sha(b"c" * MB)]
    assert not Path(paths["b"]).exists()
    assert Path(paths["a"]).exists() and Path(paths["c"]).exists()


async def test_a_leased_entry_is_not_evicted(
    api: ApiClient, shared_server: EmbeddedServer, tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "small", max_bytes=int(1.5 * MB))
    first = register(shared_server, local_file(tmp_path, "1.bin", b"1" * MB).as_uri())
    second = register(shared_server, local_file(tmp_path, "2.bin", b"2" * MB).as_uri())
    running = task_with(m=first)  # still running: its lease is not released
    kept = (await fetch_input_models(api, running, cache, ListConsole()))["CONVEYOR_INPUT_MODEL"]
    await fetch_input_models(api, task_with(m=second), cache, ListConsole())
    assert Path(kept).exists()
    assert cache.usage()[0] == 2 * MB  # over the bound rather than pulling a model from a task


async def test_leases_and_staging_left_by_dead_agents_are_cleared(
    api: ApiClient, shared_server: EmbeddedServer, tmp_path: Path
) -> None:
    proc = subprocess.Popen(["true"])  # once reaped, a pid that no longer exists
    proc.wait()
    root = tmp_path / "cache"
    (root / "tmp" / f"{proc.pid}-0123abcd" / "content").mkdir(parents=True)
    cache = ModelCache(root, max_bytes=int(1.5 * MB))
    assert not any((root / "tmp").iterdir())  # a crashed download's staging is gone

    first = register(shared_server, local_file(tmp_path, "1.bin", b"1" * MB).as_uri())
    second = register(shared_server, local_file(tmp_path, "2.bin", b"2" * MB).as_uri())
    crashed = task_with(m=first)
    await fetch_input_models(api, crashed, cache, ListConsole())
    lease = root / "leases" / f"{crashed.id}.json"
    record = json.loads(lease.read_text())
    lease.write_text(json.dumps({**record, "pid": proc.pid}))  # its agent died holding it
    await fetch_input_models(api, task_with(m=second), cache, ListConsole())
    assert cache.usage() == (MB, [sha(b"2" * MB)])
    assert not lease.exists()


async def test_a_package_is_extracted_once(
    api: ApiClient,
    shared_server: EmbeddedServer,
    cache: ModelCache,
    http_files: Served,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", '{"layers": 2}')
        zf.writestr("weights/model.bin", b"w" * 1000)
    uri = http_files.add("bundle.zip", archive.read_bytes())
    model_id = register(shared_server, uri, package=True)

    env = await fetch_input_models(api, task_with(bundle=model_id), cache, ListConsole())
    folder = Path(env["CONVEYOR_INPUT_MODEL_BUNDLE"])
    assert folder.is_dir()
    assert (folder / "config.json").read_text() == '{"layers": 2}'
    extracted = (folder / "weights" / "model.bin").stat()
    assert extracted.st_size == 1000

    console = ListConsole()
    env2 = await fetch_input_models(api, task_with(bundle=model_id), cache, console)
    assert env2["CONVEYOR_INPUT_MODEL_BUNDLE"] == str(folder)
    assert "cache hit" in console.text()
    again = (folder / "weights" / "model.bin").stat()
    assert (again.st_ino, again.st_mtime_ns) == (extracted.st_ino, extracted.st_mtime_ns)
    assert http_files.hits[uri.removeprefix(http_files.base)] == 1


async def test_an_unsafe_package_is_refused(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, tmp_path: Path
) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escaped.txt", "x")
    model_id = register(shared_server, archive.as_uri(), package=True)
    with pytest.raises(StageError, match="unsafe path in the package"):
        await fetch_input_models(api, task_with(evil=model_id), cache, ListConsole())
    assert not (cache.root.parent / "escaped.txt").exists()


async def test_transient_http_errors_are_retried(
    api: ApiClient,
    shared_server: EmbeddedServer,
    cache: ModelCache,
    http_files: Served,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models_fetch, "RETRY_BACKOFF", 0.01)
    uri = http_files.add("flaky.bin", b"eventually")
    http_files.failures[uri.removeprefix(http_files.base)] = 2
    model_id = register(shared_server, uri)
    env = await fetch_input_models(api, task_with(m=model_id), cache, ListConsole())
    assert Path(env["CONVEYOR_INPUT_MODEL"]).read_bytes() == b"eventually"
    assert http_files.hits[uri.removeprefix(http_files.base)] == 3


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound but not listening: a connection to it is refused, with no race."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def fetch_failure(api: ApiClient, cache: ModelCache, model_id: str) -> str:
    with pytest.raises(StageError) as caught:
        await fetch_input_models(api, task_with(base=model_id), cache, ListConsole())
    return caught.value.reason


async def test_unreachable_uris_fail_the_task_naming_model_uri_and_cause(
    api: ApiClient,
    shared_server: EmbeddedServer,
    cache: ModelCache,
    refusing_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models_fetch, "RETRY_BACKOFF", 0.01)
    cases = {
        f"http://127.0.0.1:{refusing_port}/x": "connection refused (after 3 attempts)",
        "https://user:hunter2@no-such-host.invalid/m.pt?token=s3cr3t": (
            "cannot resolve host no-such-host.invalid ("
        ),
        "file:///nonexistent/dir/model.pt": "no such file",
        "file://fileserver/models/model.pt": "a file URI on another host (fileserver)",
    }
    for uri, cause in cases.items():
        model_id = register(shared_server, uri)
        shown = redact(uri)
        reason = await fetch_failure(api, cache, model_id)
        assert reason.startswith(f"input model base ({model_id}): {shown} unreachable: {cause}")
        assert "hunter2" not in reason and "s3cr3t" not in reason and "user" not in reason
    assert cache.usage() == (0, [])
    assert not any((cache.root / "tmp").iterdir())


async def test_http_404_unknown_model_and_unsupported_scheme(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, http_files: Served
) -> None:
    missing = register(shared_server, http_files.base + "/nope/model.pt?token=secret")
    assert await fetch_failure(api, cache, missing) == (
        f"input model base ({missing}): {http_files.base}/nope/model.pt unreachable: "
        "HTTP 404 Not Found"
    )
    ftp = register(shared_server, "ftp://example.com/model.pt")
    assert await fetch_failure(api, cache, ftp) == (
        f"input model base ({ftp}): ftp://example.com/model.pt: unsupported URI scheme 'ftp' "
        "(file, http(s), s3, gs)"
    )
    with pytest.raises(StageError, match=r"^input model base \(nope123\): no such model"):
        await fetch_input_models(api, task_with(base="nope123"), cache, ListConsole())


async def test_a_directory_is_not_a_model(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, tmp_path: Path
) -> None:
    model_id = register(shared_server, tmp_path.as_uri())
    assert await fetch_failure(api, cache, model_id) == (
        f"input model base ({model_id}): {tmp_path.as_uri()} is a directory (register a file, "
        "or a zip of the folder tagged 'package')"
    )


async def test_the_client_reads_system_tags_and_adds_metadata(
    api: ApiClient, shared_server: EmbeddedServer
) -> None:
    model_id = register(shared_server, "https://h/m.zip", sha256="ab" * 32, package=True)
    await api.add_model_metadata(model_id, {"epochs": "3", "sha256": "cd" * 32})
    info = await api.get_model(model_id)
    assert info.system_tags == ("package",)
    assert dict(info.metadata) == {"sha256": "cd" * 32, "epochs": "3"}


@pytest.mark.skipif(importlib.util.find_spec("boto3") is not None, reason="boto3 is installed")
async def test_s3_without_the_extra_says_what_to_install(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache
) -> None:
    model_id = register(shared_server, "s3://bucket/models/model.pt")
    with pytest.raises(StageError, match=r"conveyor-agent\[s3\]"):
        await fetch_input_models(api, task_with(base=model_id), cache, ListConsole())


async def test_a_malformed_recorded_checksum_is_an_error(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, tmp_path: Path
) -> None:
    model_id = register(shared_server, local_file(tmp_path, "m.pt", b"m").as_uri(), "md5:abc")
    with pytest.raises(StageError, match="metadata sha256='md5:abc' is not a sha256 hex digest"):
        await fetch_input_models(api, task_with(base=model_id), cache, ListConsole())


async def test_concurrent_fetches_of_one_uri_download_it_once(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, http_files: Served
) -> None:
    uri = http_files.add("shared.bin", b"s" * MB)
    model_id = register(shared_server, uri)
    tasks = [task_with(m=model_id) for _ in range(4)]
    results = await asyncio.gather(
        *(fetch_input_models(api, task, ModelCache(cache.root, 0), ListConsole()) for task in tasks)
    )
    assert len({r["CONVEYOR_INPUT_MODEL"] for r in results}) == 1
    assert http_files.hits[uri.removeprefix(http_files.base)] == 1


async def test_cancelling_stops_the_download_and_leaves_no_debris(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, http_files: Served
) -> None:
    http_files.release.clear()
    http_files.stalled.clear()
    model_id = register(shared_server, http_files.base + "/x/slow")
    job = asyncio.ensure_future(
        fetch_input_models(api, task_with(m=model_id), cache, ListConsole())
    )
    assert await asyncio.to_thread(http_files.stalled.wait, WAIT)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    http_files.release.set()  # the server sends the rest; the thread sees the cancel and stops
    wait_for(lambda: not any((cache.root / "tmp").iterdir()), timeout=WAIT)
    assert cache.usage() == (0, [])
