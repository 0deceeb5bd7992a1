"""ApiClient: the one typed client for the ClearML REST protocol.

Every call the agent makes to the server goes through a method here; the daemon and the pipeline
never see a URL or an envelope. Documents with a shape become frozen dataclasses at this edge
(:class:`TaskSpec`, :class:`ModelInfo`); a malformed one raises :class:`TaskDocumentError`.
Retry budgets: ``retry_for`` seconds of retrying transient failures (None: forever). Views made
with :meth:`ApiClient.with_retry_for` share the connection pool and the token.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from agent.api.connection import Connection, Request
from agent.api.envelope import JSON_LINES, chunk_json_lines, encode_body, require
from agent.api.errors import (
    HTTP_BAD_REQUEST,
    HTTP_NOT_FOUND,
    NO_DEFAULT_QUEUE,
    ApiError,
    NotFoundError,
    ProtocolError,
)
from agent.api.models import ModelInfo, TaskSpec
from agent.retry import attempt_of

# events.add_batch: the server takes chunks up to ~15 MB; stay well below.
MAX_EVENTS_REQUEST_BYTES = 8 * 1024 * 1024
LOG_PAGE_SIZE = 10_000  # events.get_task_log batch_size ceiling
STATUS_FIELDS = ("status", "status_message")


class ApiClient:
    def __init__(
        self,
        base_url: str,
        access_key: str,
        secret_key: str,
        *,
        worker_id: str = "",
        retry_for: float | None = 60.0,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._conn = Connection(
            base_url,
            access_key,
            secret_key,
            worker_id=worker_id,
            timeout=timeout,
            transport=transport,
        )
        self.retry_for = retry_for

    @property
    def base_url(self) -> str:
        return self._conn.base_url

    @property
    def logins(self) -> int:
        """How many times this client (and its views) logged in."""
        return self._conn.logins

    async def aclose(self) -> None:
        """Close the shared connection (for every view made with :meth:`with_retry_for`)."""
        await self._conn.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def with_retry_for(self, retry_for: float | None) -> ApiClient:
        """A view on the same connection and token with another retry budget."""
        view = copy.copy(self)
        view.retry_for = retry_for
        return view

    async def token(self) -> str:
        """The API token this client sends (logged in if needed): the credential the clearml SDK
        shows its configured files host, so the agent shows it there too, and nowhere else."""
        return await self._conn.token(self.retry_for)

    async def call(self, endpoint: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST ``body`` to ``service.action``; the response's ``data``."""
        return await self._conn.request(Request(endpoint, encode_body(body)), self.retry_for)

    # --- tasks ---------------------------------------------------------------------------
    async def get_task_document(self, task_id: str) -> dict[str, Any]:
        data = await self.call("tasks.get_by_id", {"task": task_id})
        document: dict[str, Any] = require(data, "task", dict, "tasks.get_by_id")
        return document

    async def get_task(self, task_id: str) -> TaskSpec:
        """The task as a TaskSpec; :class:`TaskDocumentError` if the document is malformed."""
        return TaskSpec.parse(await self.get_task_document(task_id))

    async def task_status(self, task_id: str) -> tuple[str, str]:
        """``(status, status_message)``: the cheap poll that detects an abort."""
        status, message, _ = await self.task_progress(task_id)
        return status, message

    async def task_progress(self, task_id: str) -> tuple[str, str, int]:
        """``(status, status_message, attempt)``: the abort watch's poll; the attempt is the
        retry counter on the task (``runtime.conveyor_attempt``, 1 when unset)."""
        body = {"id": [task_id], "only_fields": [*STATUS_FIELDS, "runtime"]}
        tasks = await self._list("tasks.get_all", body, "tasks")
        if not tasks:
            raise NotFoundError(400, 101, f"task {task_id} not found", "tasks.get_all")
        doc, runtime = tasks[0], tasks[0].get("runtime")
        attempt = attempt_of(runtime if isinstance(runtime, dict) else None)
        return str(doc.get("status") or ""), str(doc.get("status_message") or ""), attempt

    async def started(self, task_id: str, message: str = "", force: bool = True) -> None:
        body = {"task": task_id, "force": force, "status_message": message or "pulled by agent"}
        await self.call("tasks.started", body)  # force=False: a stopped task is not revived

    async def completed(self, task_id: str) -> None:
        await self.call("tasks.completed", {"task": task_id, "force": False})

    async def failed(
        self, task_id: str, reason: str, *, message: str = "", force: bool = True
    ) -> None:
        body = {"task": task_id, "force": force, "status_reason": reason, "status_message": message}
        await self.call("tasks.failed", body)

    async def stopped(
        self, task_id: str, reason: str, *, message: str = "", force: bool = True
    ) -> None:
        body = {"task": task_id, "force": force, "status_reason": reason, "status_message": message}
        await self.call("tasks.stopped", body)

    async def set_requirements(self, task_id: str, pip: str, org_pip: str = "") -> None:
        requirements = {"pip": pip, **({"org_pip": org_pip} if org_pip else {})}
        await self.call("tasks.set_requirements", {"task": task_id, "requirements": requirements})

    async def edit_task(self, task_id: str, fields: Mapping[str, Any]) -> None:
        await self.call("tasks.edit", {**fields, "task": task_id, "force": True})

    async def ping(self, task_id: str) -> None:
        await self.call("tasks.ping", {"task": task_id})

    async def create_task(
        self,
        name: str,
        project: str = "",
        *,
        script: Mapping[str, Any] | None = None,
        container: Mapping[str, Any] | None = None,
        hyperparams: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        task_type: str = "training",
    ) -> str:
        """Create a task in status ``created``; ``project`` is a project id (or empty)."""
        body: dict[str, Any] = {"name": name, "type": task_type}
        optional = {
            "project": project,
            "script": script,
            "container": container,
            "hyperparams": hyperparams,
        }
        body.update({key: value for key, value in optional.items() if value})
        data = await self.call("tasks.create", body)
        task_id: str = require(data, "id", str, "tasks.create")
        return task_id

    async def enqueue(
        self, task_id: str, queue_id: str, *, reason: str = "", message: str = ""
    ) -> None:
        body = {"task": task_id, "queue": queue_id}
        if reason or message:
            body |= {"status_reason": reason, "status_message": message}
        await self.call("tasks.enqueue", body)

    async def move_to_front(self, queue_id: str, task_id: str) -> None:
        await self.call("queues.move_task_to_front", {"queue": queue_id, "task": task_id})

    async def stop_task(self, task_id: str, reason: str = "") -> None:
        """A user's abort (``tasks.stop``): the agent running the task notices and stops it."""
        await self.call("tasks.stop", {"task": task_id, "status_reason": reason})

    async def reset_task(self, task_id: str) -> None:
        await self.call("tasks.reset", {"task": task_id, "force": True})

    async def list_tasks(self, **filters: Any) -> list[dict[str, Any]]:
        return await self._list("tasks.get_all", filters, "tasks")

    async def get_project_id(self, name: str, create: bool = True) -> str:
        """The id of the project called ``name`` (created if missing and ``create``);
        an empty name means "no project" and gives ""."""
        if not name:
            return ""
        body = {"name": f"^{re.escape(name)}$", "only_fields": ["id", "name"]}
        for project in await self._list("projects.get_all", body, "projects"):
            if project.get("name") == name and isinstance(project.get("id"), str):
                return str(project["id"])
        if not create:
            raise NotFoundError(404, 0, f"no project named {name!r}", "projects.get_all")
        data = await self.call("projects.create", {"name": name, "description": ""})
        project_id: str = require(data, "id", str, "projects.create")
        return project_id

    # --- queues --------------------------------------------------------------------------
    async def queue_id(self, name_or_id: str) -> str:
        """Resolve a queue given by id or by name (id first, as the SDK does)."""
        try:
            data = await self.call("queues.get_by_id", {"queue": name_or_id})
            queue = require(data, "queue", dict, "queues.get_by_id")
            return str(require(queue, "id", str, "queues.get_by_id"))
        except ApiError as exc:
            # Not an id (404, 400/701, or a validation error for a malformed id): try a name.
            if exc.code not in (HTTP_BAD_REQUEST, HTTP_NOT_FOUND):
                raise
        body = {"name": f"^{re.escape(name_or_id)}$", "only_fields": ["id", "name"]}
        for queue in await self._list("queues.get_all", body, "queues"):
            if queue.get("name") == name_or_id and isinstance(queue.get("id"), str):
                return str(queue["id"])
        raise NotFoundError(
            400, 701, f"no queue named {name_or_id!r} (nor with that id)", "queues.get_all"
        )

    async def default_queue_id(self) -> str:
        try:
            data = await self.call("queues.get_default")
        except ApiError as exc:
            if exc.subcode != NO_DEFAULT_QUEUE:
                raise
            raise NotFoundError(
                exc.code,
                exc.subcode,
                "the server has no default queue: name one (e.g. --queue default) or create a "
                "queue with the system tag 'default'",
                exc.endpoint,
            ) from exc
        return str(require(data, "id", str, "queues.get_default"))

    async def create_queue(self, name: str) -> str:
        data = await self.call("queues.create", {"name": name})
        return str(require(data, "id", str, "queues.create"))

    async def get_next_task(self, queue_id: str, worker: str = "") -> str | None:
        """Pop the head of the queue for ``worker`` (default: the client's worker id): a task
        id, or None when the queue is empty. The server holds the task for that worker until
        it starts it, or gives it back if the worker goes away first."""
        request = Request("queues.get_next_task", encode_body({"queue": queue_id}), worker=worker)
        data = await self._conn.request(request, self.retry_for)
        entry = data.get("entry")
        if not entry:
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("task"), str):
            raise ProtocolError(
                200, 0, f"malformed queue entry {entry!r:.80}", "queues.get_next_task"
            )
        return str(entry["task"])

    async def wait_for_entries(self, queue_ids: Sequence[str], timeout: float) -> list[str]:
        """Conveyor's long poll: the queues that have entries, as soon as one has (or none after
        ``timeout`` s). A server without it (ClearML's) refuses the call with an ApiError."""
        body = encode_body({"queues": list(queue_ids), "timeout": timeout})
        request = Request("queues.wait_for_entries", body, holds=timeout)
        data = await self._conn.request(request, self.retry_for)
        found = data.get("queues")
        if not isinstance(found, list) or not all(isinstance(q, str) for q in found):
            raise ProtocolError(200, 0, f"malformed answer {data!r:.80}", "queues.wait_for_entries")
        return found

    async def list_queues(self) -> list[dict[str, Any]]:
        return await self._list("queues.get_all", {}, "queues")

    # --- workers -------------------------------------------------------------------------
    async def register_worker(
        self, worker: str, queues: Sequence[str], timeout: float = 600.0
    ) -> None:
        body = {"worker": worker, "queues": list(queues), "timeout": timeout}
        await self.call("workers.register", body)

    async def status_report(
        self,
        worker: str,
        *,
        queues: Sequence[str],
        task: str | None = None,
        queue: str | None = None,
        machine_stats: Mapping[str, Any] | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "worker": worker,
            "timestamp": int(time.time() * 1000),
            "queues": list(queues),
        }
        if task:
            body["task"] = task
        if queue:
            body["queue"] = queue
        if machine_stats:
            body["machine_stats"] = dict(machine_stats)
        await self.call("workers.status_report", body)

    async def unregister_worker(self, worker: str) -> None:
        await self.call("workers.unregister", {"worker": worker})

    async def list_workers(self) -> list[dict[str, Any]]:
        return await self._list("workers.get_all", {}, "workers")

    # --- events --------------------------------------------------------------------------
    async def add_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """``events.add_batch`` as JSON lines, in requests of at most ~8 MB, in order."""
        for chunk in chunk_json_lines(events, MAX_EVENTS_REQUEST_BYTES):
            request = Request("events.add_batch", chunk, JSON_LINES)
            data = await self._conn.request(request, self.retry_for)
            if data.get("errors"):
                raise ApiError(
                    400,
                    0,
                    f"server rejected events: {data.get('errors_info')!r:.200}",
                    "events.add_batch",
                )

    async def get_task_log(self, task_id: str, last: int = 1000) -> list[dict[str, Any]]:
        """The latest ``last`` console events of a task, oldest first."""
        pages: list[list[dict[str, Any]]] = []
        remaining, before = last, None
        while remaining > 0:
            size = min(remaining, LOG_PAGE_SIZE)
            body: dict[str, Any] = {
                "task": task_id,
                "batch_size": size,
                "navigate_earlier": True,
                "order": "asc",
            }
            if before is not None:
                body["from_timestamp"] = before
            page = await self._list("events.get_task_log", body, "events")
            pages.append(page)
            remaining -= len(page)
            if len(page) < size:
                break
            before = min(int(e.get("timestamp") or 0) for e in page)
        return [event for page in reversed(pages) for event in page]

    async def get_task_log_since(
        self, task_id: str, since_ms: int, limit: int = LOG_PAGE_SIZE
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` console events stamped at or after ``since_ms``, oldest first."""
        body = {
            "task": task_id,
            "batch_size": limit,
            "navigate_earlier": False,
            "from_timestamp": since_ms - 1,  # servers answer "after": keep the equal ones
            "order": "asc",
        }
        return await self._list("events.get_task_log", body, "events")

    async def add_scalars(
        self, task_id: str, metric: str, values: Mapping[str, float], iteration: int
    ) -> None:
        """One scalar event per variant (``training_stats_scalar``), e.g. ``:monitor:machine``."""
        stamp = int(time.time() * 1000)
        events = [
            {
                "type": "training_stats_scalar",
                "task": task_id,
                "metric": metric,
                "variant": variant,
                "value": float(value),
                "iter": iteration,
                "timestamp": stamp,
            }
            for variant, value in values.items()
        ]
        await self.add_events(events)

    # --- models --------------------------------------------------------------------------
    async def get_model(self, model_id: str) -> ModelInfo:
        data = await self.call("models.get_by_id", {"model": model_id})
        return ModelInfo.parse(require(data, "model", dict, "models.get_by_id"))

    async def add_model_metadata(self, model_id: str, items: Mapping[str, str]) -> None:
        """Add or update string metadata items on a model (others are kept)."""
        metadata = [{"key": key, "type": "str", "value": value} for key, value in items.items()]
        await self.call("models.add_or_update_metadata", {"model": model_id, "metadata": metadata})

    # --- helpers -------------------------------------------------------------------------
    async def _list(self, endpoint: str, body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        data = await self.call(endpoint, body)
        items = require(data, key, list, endpoint)
        return [item for item in items if isinstance(item, dict)]
