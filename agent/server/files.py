"""The embedded file service: a files host (``CLEARML_FILES_HOST``) for the clearml SDK.

Served by the control plane's own app under ``/files`` (so ``<api url>/files`` is the files
host), with what the SDK's HTTP storage driver (``clearml/storage/helper.py: _HttpDriver``) does:

    POST   /files[/<folder>/]  multipart/form-data; each part's field NAME is the object's path
                               relative to the folder (the SDK posts to the files host itself,
                               names like "/project/task.<id>/artifacts/a/a.json"); 200 on success
    GET    /files/<path>       the object, streamed; one ``Range`` → 206; HEAD gives the headers
    DELETE /files/<path>       removes it

The SDK sends its ``Authorization: Bearer <token>`` to a URL under its configured files host;
uploads and deletes need it (or Basic key:secret), downloads too unless ``files_public``.
Refusals are plain-text bodies (the SDK shows them): 400 bad path, 401 no or bad token,
404 missing, 409 a file where a folder is needed, 413 over the quota, 416 bad range.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from email.utils import formatdate

import anyio
import structlog
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agent.server import auth
from agent.server.errors import ApiError
from agent.server.files_paths import (
    ByteRange,
    FilesError,
    ObjectKey,
    RangeNotSatisfiable,
    field_name,
    object_key,
    parse_range,
    refused,
)
from agent.server.files_store import FileStore, Staged, Stored
from agent.server.state import ServerState

log = structlog.get_logger()

FILES_PREFIX = "/files"
FEED_BYTES = 4 << 20  # body bytes handed to the parser (in a worker thread) at a time
READ_CHUNK = 256 << 10  # download chunk
# After a refusal the rest of the request body is read and dropped, up to this much, so the
# client gets the answer rather than a reset connection; past it the connection is closed.
DRAIN_LIMIT = 256 << 20
MAX_PART_HEADER_BYTES = 16 << 10


def files_url(api_url: str) -> str:
    """The files host of a control plane at ``api_url``."""
    return api_url.rstrip("/") + FILES_PREFIX


class FileService:
    """The ``/files`` routes of one server state."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self.store = FileStore(state.config.files_dir, state.config.files_quota)

    def routes(self) -> list[Route]:
        methods = ["GET", "HEAD", "POST", "DELETE"]
        return [
            Route(FILES_PREFIX, self.handle, methods=methods),
            Route(FILES_PREFIX + "/{path:path}", self.handle, methods=methods),
        ]

    async def handle(self, request: Request) -> Response:
        path = str(request.path_params.get("path", ""))
        body = request.stream()
        try:
            if request.method == "POST":
                self._authorize(request, write=True)
                return await self._upload(request, body, path)
            if request.method == "DELETE":
                self._authorize(request, write=True)
                return await self._delete(path)
            self._authorize(request, write=False)
            return await self._download(request, path)
        except FilesError as exc:
            await _drain(body)
            log.info("files_refused", method=request.method, path=path, status=exc.status)
            headers = (
                {"Content-Range": f"bytes */{exc.size}"}
                if isinstance(exc, RangeNotSatisfiable)
                else None
            )
            return PlainTextResponse(exc.msg, status_code=exc.status, headers=headers)
        except ClientDisconnect:
            log.info("files_client_gone", method=request.method, path=path)
            return PlainTextResponse("client disconnected", status_code=400)

    def _authorize(self, request: Request, *, write: bool) -> None:
        if not write and self._state.config.files_public:
            return
        try:
            auth.authenticate(self._state, request.headers.get("authorization", ""))
        except ApiError as exc:
            raise FilesError(401, exc.msg) from exc

    async def _upload(self, request: Request, body: AsyncIterator[bytes], path: str) -> Response:
        receiver = _Receiver(self.store, path, _boundary(request.headers.get("content-type", "")))
        loop = asyncio.get_running_loop()
        writing: asyncio.Future[None] | None = None
        try:
            # Pipelined: a worker thread parses and writes one buffer while the loop receives
            # the next (one thread hop per FEED_BYTES; at most two buffers per upload).
            buffer = bytearray()
            async for chunk in body:
                buffer += chunk
                if len(buffer) >= FEED_BYTES:
                    if writing is not None:
                        await writing
                    writing = loop.run_in_executor(None, receiver.feed, buffer)
                    buffer = bytearray()  # the thread owns the full one now
            if writing is not None:
                await writing
            stored = await run_in_threadpool(receiver.finish, bytes(buffer))
        except BaseException:
            if writing is not None:
                # Its files must be complete before they are dropped; its own error (if any)
                # is superseded by the one being raised.
                await asyncio.wait([writing])
                if not writing.cancelled():
                    writing.exception()
            await run_in_threadpool(receiver.abort)
            raise
        for item in stored:
            log.info("files_stored", path=item.path, size=item.size)
        payload = {"stored": [{"path": item.path, "size": item.size} for item in stored]}
        return Response(json.dumps(payload), media_type="application/json")

    async def _download(self, request: Request, path: str) -> Response:
        fd, info = await run_in_threadpool(self.store.open_read, object_key(path))
        try:
            byte_range = parse_range(request.headers.get("range"), info.st_size)
            if byte_range is not None and not _if_range_matches(request, info):
                byte_range = None
        except RangeNotSatisfiable:
            os.close(fd)
            raise
        return FileStream(fd, info, byte_range, head=request.method == "HEAD")

    async def _delete(self, path: str) -> Response:
        removed = await run_in_threadpool(self.store.delete, object_key(path))
        log.info("files_deleted", path=removed.path, size=removed.size)
        return Response(json.dumps({"deleted": removed.path}), media_type="application/json")


def _boundary(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise refused(
            f"upload must be multipart/form-data with a boundary, got {content_type or 'nothing'!r}"
        )
    return boundary


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read and drop what is left of a refused request's body, up to ``DRAIN_LIMIT``."""
    dropped = 0
    try:
        async for chunk in body:
            dropped += len(chunk)
            if dropped > DRAIN_LIMIT:
                return
    except (ClientDisconnect, RuntimeError):  # gone, or the body was fully read already
        return


class _Receiver:
    """A multipart body parsed as it arrives (python-multipart's streaming parser), each part
    written straight into a staged file. Blocking: runs in worker threads, one call at a time."""

    def __init__(self, store: FileStore, folder: str, boundary: bytes) -> None:
        self._store = store
        self._folder = folder
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._current: tuple[ObjectKey, Staged] | None = None
        self._parts: list[tuple[ObjectKey, Staged]] = []
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": lambda d, s, e: self._header_name.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
            max_header_size=MAX_PART_HEADER_BYTES,
        )

    def feed(self, data: bytes | bytearray) -> None:
        try:
            self._parser.write(data)  # type: ignore[arg-type]  # bytearray works as bytes
        except MultipartParseError as exc:
            raise refused(f"malformed multipart body: {exc}") from exc

    def finish(self, data: bytes) -> list[Stored]:
        """The last bytes; commits every part (each atomically) once the body is complete."""
        self.feed(data)
        if not self._ended:
            raise refused("incomplete multipart body (no closing boundary)")
        if not self._parts:
            raise refused("no file in the upload")
        return [self._store.commit(staged, key) for key, staged in self._parts]

    def abort(self) -> None:
        pending = [*self._parts, *([self._current] if self._current else [])]
        for _, staged in pending:
            staged.abort()

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value).strip()
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        key = object_key(self._folder, field_name(self._disposition))
        self._current = (key, self._store.stage())

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:
            raise refused("multipart data before the part's headers")
        self._current[1].write(memoryview(data)[start:end])  # no copy of the slice

    def _part_end(self) -> None:
        if self._current is not None:
            self._parts.append(self._current)
            self._current = None

    def _end(self) -> None:
        self._ended = True


def _etag(info: os.stat_result) -> str:
    return f'"{info.st_ino:x}-{info.st_mtime_ns:x}-{info.st_size:x}"'


def _if_range_matches(request: Request, info: os.stat_result) -> bool:
    """``If-Range``: serve the range only if the object is the one the client has a part of."""
    validator = request.headers.get("if-range")
    if validator is None:
        return True
    return validator in (_etag(info), formatdate(info.st_mtime, usegmt=True))


class FileStream(Response):
    """An open file sent in chunks read by worker threads; the descriptor is closed at the end
    (also when the client goes away mid-transfer, which stops the reading)."""

    def __init__(
        self, fd: int, info: os.stat_result, byte_range: ByteRange | None, *, head: bool
    ) -> None:
        self._fd = fd
        self._range = byte_range or ByteRange(0, info.st_size)
        self._head = head
        self.status_code = 206 if byte_range is not None else 200
        self.background = None
        headers = {
            "content-length": str(self._range.length),
            "accept-ranges": "bytes",
            "etag": _etag(info),
            "last-modified": formatdate(info.st_mtime, usegmt=True),
            "x-content-type-options": "nosniff",
        }
        if byte_range is not None:
            headers["content-range"] = byte_range.content_range(info.st_size)
        self.media_type = "application/octet-stream"
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            if self._head:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                await self._send_body(send)
                group.cancel_scope.cancel()
        finally:
            os.close(self._fd)

    async def _send_body(self, send: Send) -> None:
        offset, end = self._range.start, self._range.end
        while offset < end:
            size = min(READ_CHUNK, end - offset)
            chunk = await anyio.to_thread.run_sync(os.pread, self._fd, size, offset)
            if not chunk:  # truncated in place behind our back: end short rather than hang
                log.warning("files_short_read", offset=offset, expected=end)
                break
            offset += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": offset < end})
        if offset < end or self._range.length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
