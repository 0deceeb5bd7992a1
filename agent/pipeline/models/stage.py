"""The input-models stage: each model record resolved on the server, fetched through the cache,
exposed to the task by environment variable, its digest recorded when it had none.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping

import structlog

from agent.api.client import ApiClient
from agent.api.errors import INVALID_MODEL_ID, ApiError
from agent.api.models import InputModelRef, TaskDocumentError, TaskSpec
from agent.errors import StageError
from agent.pipeline.console import Console
from agent.pipeline.models.cache import ModelCache
from agent.pipeline.models.records import (
    PACKAGE_TAG,
    SHA256_METADATA_KEY,
    SHORT_SHA,
    Cancelled,
    FetchedModel,
    ModelError,
    ModelSource,
    expected_sha256,
    human_size,
    input_model_env,
    model_env_names,
    redact,
)

log = structlog.get_logger()


async def fetch_input_models(
    api: ApiClient,
    task: TaskSpec,
    cache: ModelCache,
    console: Console,
    *,
    headers_for: Callable[[str], Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """Fetch every input model of ``task`` concurrently; the environment variables that expose
    them. Start it as an asyncio task beside the environment stage; cancelling it stops the
    downloads. Raises StageError("input model <name> (<id>): <why>") on the first failure,
    e.g. ``input model base (4f1c…): https://host/m.pt unreachable: connection refused``.
    Call ``cache.release(task.id)`` when the task has ended."""
    refs = task.input_models
    if not refs:
        return {}
    names = model_env_names(refs)
    cancel = threading.Event()
    jobs = [
        asyncio.ensure_future(
            _fetch_one(api, ref, var, cache, console, headers_for, cancel, task.id)
        )
        for ref, var in zip(refs, names, strict=True)
    ]
    try:
        done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
        for job in done:
            error = job.exception()
            if error is not None:
                raise error
    finally:
        cancel.set()  # stops the threads of unfinished downloads
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    return input_model_env([job.result() for job in jobs], names)


async def _fetch_one(
    api: ApiClient,
    ref: InputModelRef,
    var: str,
    cache: ModelCache,
    console: Console,
    headers_for: Callable[[str], Mapping[str, str]] | None,
    cancel: threading.Event,
    owner: str,
) -> FetchedModel:
    where = f"input model {ref.name} ({ref.model_id})"
    started = time.monotonic()
    try:
        source = await resolve_model(api, ref)
        headers = headers_for(source.uri) if headers_for else {}
        fetched = await asyncio.to_thread(
            cache.fetch, source, owner=owner, cancel=cancel, headers=headers, notice=console.info
        )
    except ModelError as exc:
        raise StageError(f"{where}: {exc}", stage="models") from exc
    except Cancelled:
        raise asyncio.CancelledError from None
    console.info(_fetched_line(fetched, source, var, time.monotonic() - started))
    log.info("input model", model=ref.model_id, cache_hit=fetched.cache_hit, size=fetched.size)
    if not fetched.recorded:
        await _record_sha256(api, fetched, console)
    return fetched


async def resolve_model(api: ApiClient, ref: InputModelRef) -> ModelSource:
    """The model document as a :class:`ModelSource`; :class:`ModelError` if unusable."""
    try:
        info = await api.get_model(ref.model_id)
    except ApiError as exc:
        if exc.subcode == INVALID_MODEL_ID:
            raise ModelError("no such model on the server") from exc
        raise ModelError(f"the server could not resolve it: {exc}") from exc
    except TaskDocumentError as exc:
        raise ModelError(str(exc)) from exc
    if not info.uri:
        raise ModelError("the model has no URI (its weights were never uploaded)")
    return ModelSource(
        name=ref.name,
        model_id=ref.model_id,
        uri=info.uri,
        sha256=expected_sha256(info.metadata),
        package=PACKAGE_TAG in info.system_tags,
    )


def _fetched_line(fetched: FetchedModel, source: ModelSource, var: str, seconds: float) -> str:
    what = "package" if source.package else "file"
    digest = f"sha256 {fetched.sha256[:SHORT_SHA]}"
    if fetched.cache_hit:
        check = "re-verified" if fetched.rehashed else "size and times unchanged"
        how = f"cache hit ({human_size(fetched.size)} {what}, {digest} {check})"
    else:
        check = "verified" if fetched.recorded else "computed"
        how = (
            f"fetched {redact(source.uri)} ({human_size(fetched.size)} {what}, "
            f"{seconds:.1f} s, {digest} {check})"
        )
    return f"model {source.name}: {how} → ${{{var}}}"


async def _record_sha256(api: ApiClient, fetched: FetchedModel, console: Console) -> None:
    try:
        await api.add_model_metadata(fetched.model_id, {SHA256_METADATA_KEY: fetched.sha256})
    except ApiError as exc:
        console.info(f"model {fetched.name}: could not record its sha256 on the server ({exc})")
        log.warning("model sha256 not recorded", model=fetched.model_id, error=str(exc))
        return
    console.info(f"model {fetched.name}: sha256 recorded on the model (metadata sha256)")
