"""A cache hit is verified before use: a corrupted cached model is evicted and fetched again,
and the task gets the right bytes."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from agent.api.client import ApiClient
from agent.pipeline.console import ListConsole
from agent.pipeline.models import ModelCache, fetch_input_models
from agent.server.embedded import EmbeddedServer
from tests.integration.models.support import Served, local_file, register, sha, task_with

CONTENT = b"weights:" + bytes(range(256)) * 40


async def fetch(api: ApiClient, cache: ModelCache, model_id: str) -> tuple[Path, str]:
    """One task's fetch of the model: its path and the task's console text."""
    console = ListConsole()
    env = await fetch_input_models(api, task_with(m=model_id), cache, console)
    return Path(env["CONVEYOR_INPUT_MODEL"]), console.text()


def overwrite(path: Path, content: bytes, *, keep_mtime: bool = False) -> None:
    """What a careless task (or a bad disk) does to a read-only cached file."""
    before = path.stat()
    path.chmod(0o644)
    path.write_bytes(content)
    path.chmod(0o444)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def hide_the_change(entry: Path) -> None:
    """Record the entry's present sizes and times in its manifest: a change that left no trace
    in the file system's metadata (bit rot, a raw write to the block device)."""
    meta_path = entry / "meta.json"
    meta = json.loads(meta_path.read_text())
    for name, record in meta["files"].items():
        st = (entry / "content" / name).lstat()
        record[:3] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    meta_path.write_text(json.dumps(meta))


async def test_a_cached_file_overwritten_is_fetched_again(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, http_files: Served
) -> None:
    uri = http_files.add("best.pt", CONTENT)
    model_id = register(shared_server, uri, sha256=sha(CONTENT))
    path, _ = await fetch(api, cache, model_id)
    overwrite(path, b"garbage")

    again, console = await fetch(api, cache, model_id)

    assert again == path and again.read_bytes() == CONTENT
    assert (
        f"the cached copy failed verification (best.pt has 7 bytes, {len(CONTENT)} recorded); "
        "evicted, fetching it again"
    ) in console
    assert "fetched http://" in console
    assert http_files.hits[uri.removeprefix(http_files.base)] == 2
    assert cache.usage() == (len(CONTENT), [sha(CONTENT)])


async def test_same_size_corruption_with_the_mtime_reset_is_caught_by_the_rehash(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, tmp_path: Path
) -> None:
    model_id = register(shared_server, local_file(tmp_path, "best.pt", CONTENT).as_uri())
    path, _ = await fetch(api, cache, model_id)
    overwrite(path, CONTENT[::-1], keep_mtime=True)
    hide_the_change(path.parent.parent)  # not even the ctime gives it away

    again, console = await fetch(api, cache, model_id)

    assert again.read_bytes() == CONTENT
    assert f"best.pt has sha256 {sha(CONTENT[::-1])[:12]}…, {sha(CONTENT)[:12]}… recorded" in (
        console
    )
    assert "fetched file://" in console


async def test_above_the_threshold_a_changed_ctime_triggers_the_rehash(
    api: ApiClient, shared_server: EmbeddedServer, tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "big", max_bytes=0, full_verify_below=0)  # every entry "big"
    model_id = register(shared_server, local_file(tmp_path, "big.pt", CONTENT).as_uri())
    path, _ = await fetch(api, cache, model_id)

    _, unchanged = await fetch(api, cache, model_id)
    assert "cache hit" in unchanged and "size and times unchanged" in unchanged

    overwrite(path, CONTENT[::-1], keep_mtime=True)  # same size, mtime put back: ctime moved
    again, console = await fetch(api, cache, model_id)
    assert again.read_bytes() == CONTENT
    assert "failed verification (big.pt has sha256" in console


async def test_above_the_threshold_a_traceless_change_goes_unseen(
    api: ApiClient, shared_server: EmbeddedServer, tmp_path: Path
) -> None:
    """The documented trade-off: a big entry is re-hashed only when its stat changed."""
    cache = ModelCache(tmp_path / "big", max_bytes=0, full_verify_below=0)
    model_id = register(shared_server, local_file(tmp_path, "big.pt", CONTENT).as_uri())
    path, _ = await fetch(api, cache, model_id)
    overwrite(path, CONTENT[::-1], keep_mtime=True)
    hide_the_change(path.parent.parent)

    again, console = await fetch(api, cache, model_id)
    assert "cache hit" in console and again.read_bytes() == CONTENT[::-1]


async def test_touched_but_intact_is_a_hit_and_cheap_again_afterwards(
    api: ApiClient, shared_server: EmbeddedServer, tmp_path: Path
) -> None:
    cache = ModelCache(tmp_path / "big", max_bytes=0, full_verify_below=0)
    model_id = register(shared_server, local_file(tmp_path, "m.pt", CONTENT).as_uri())
    path, _ = await fetch(api, cache, model_id)
    path.chmod(0o444)  # a chmod moves the ctime, not the content

    _, rehashed = await fetch(api, cache, model_id)
    assert "cache hit" in rehashed and "re-verified" in rehashed

    _, cheap = await fetch(api, cache, model_id)  # the new times were recorded
    assert "size and times unchanged" in cheap


async def test_a_package_with_a_file_removed_or_added_is_extracted_again(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, tmp_path: Path
) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", '{"layers": 2}')
        zf.writestr("weights/model.bin", b"w" * 1000)
    model_id = register(shared_server, archive.as_uri(), package=True)
    folder, _ = await fetch(api, cache, model_id)

    (folder / "weights" / "model.bin").unlink()
    again, console = await fetch(api, cache, model_id)
    assert "failed verification (weights/model.bin is missing)" in console
    assert (again / "weights" / "model.bin").read_bytes() == b"w" * 1000

    (again / "notes.txt").write_text("left by a task")
    third, console = await fetch(api, cache, model_id)
    assert "failed verification (notes.txt was added)" in console
    assert sorted(p.name for p in third.iterdir()) == ["config.json", "weights"]


async def test_an_entry_without_a_manifest_is_fetched_again(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, tmp_path: Path
) -> None:
    model_id = register(shared_server, local_file(tmp_path, "old.pt", CONTENT).as_uri())
    path, _ = await fetch(api, cache, model_id)
    meta_path = path.parent.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"]  # as an older agent cached it
    meta_path.write_text(json.dumps(meta))

    again, console = await fetch(api, cache, model_id)
    assert "failed verification (it has no valid manifest" in console
    assert again.read_bytes() == CONTENT
    assert "files" in json.loads(meta_path.read_text())


async def test_an_entry_with_unreadable_metadata_is_replaced(
    api: ApiClient, shared_server: EmbeddedServer, cache: ModelCache, tmp_path: Path
) -> None:
    model_id = register(shared_server, local_file(tmp_path, "m.pt", CONTENT).as_uri())
    path, _ = await fetch(api, cache, model_id)
    (path.parent.parent / "meta.json").write_text('{"sha256": "trunc')  # a torn write

    again, console = await fetch(api, cache, model_id)
    assert again == path and again.read_bytes() == CONTENT
    assert "fetched file://" in console
    assert cache.usage() == (len(CONTENT), [sha(CONTENT)])
