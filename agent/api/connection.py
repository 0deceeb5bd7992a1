"""The HTTP side of the client: one connection pool and one token, retries with backoff.

Several :class:`~agent.api.client.ApiClient` views share a :class:`Connection` and differ only
in their retry budget (claiming gives up after a minute, log shipping never does).

Retry policy (the only transport retries in the agent): connection errors, timeouts and HTTP
502 / 503 / 429 are retried with exponential backoff and jitter (never sooner than a
``Retry-After`` the server sent, up to 60 s) until the budget runs out, then
:class:`ServerUnavailable` is raised. A 4xx is never retried; a 401 triggers one fresh login and
one repeat of the call.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)
from tenacity.stop import StopBaseT

from agent import __version__
from agent.api.envelope import (
    JSON,
    LOGIN_ENDPOINT,
    encode_body,
    endpoint_url,
    parse_envelope,
    require,
    token_expiry,
)
from agent.api.errors import ServerUnavailable

log = structlog.get_logger()
T = TypeVar("T")

AGENT_HEADER = f"conveyor-{__version__}"
RETRY_STATUSES = frozenset({429, 502, 503})
HTTP_UNAUTHORIZED = 401
REFRESH_MARGIN_S = 360.0  # log in again when the token expires within this (as the SDK does)
BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 10.0
BACKOFF_JITTER_S = 0.25
RETRY_AFTER_MAX_S = 60.0  # a longer Retry-After is taken as this
_BACKOFF = wait_exponential(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S) + wait_random(
    0, BACKOFF_JITTER_S
)


class TransientError(Exception):
    """A failure worth retrying (never leaves this module: it becomes ServerUnavailable)."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After)


def retry_after_seconds(value: str | None) -> float:
    """Pure: a Retry-After header in seconds (its delay-seconds form; an HTTP date or garbage
    counts as 0), capped at ``RETRY_AFTER_MAX_S``."""
    try:
        seconds = float(value or 0)
    except ValueError:
        return 0.0
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def _backoff(state: RetryCallState) -> float:
    """Exponential backoff with jitter, but never sooner than the server's Retry-After."""
    delay = _BACKOFF(state)
    failure = state.outcome.exception() if state.outcome is not None else None
    if isinstance(failure, TransientError):
        delay = max(delay, failure.retry_after)
    return float(delay)


@dataclass(frozen=True)
class Request:
    endpoint: str  # "service.action"
    content: bytes
    content_type: str = JSON
    holds: float = 0.0  # seconds the server may hold it before answering (a long poll)
    worker: str = ""  # X-ClearML-Worker for this request (a slot's id); "" = the client's


def stop_for(retry_for: float | None) -> StopBaseT:
    """Pure: tenacity's stop condition for a retry budget in seconds (None: never give up)."""
    return stop_never if retry_for is None else stop_after_delay(max(retry_for, 0.0))


def tls_for(base_url: str) -> ssl.SSLContext | bool:
    """Certificate checks for the server: httpx's default (the CA bundle) for an https server.

    A plain-http server (the embedded one) never sees TLS: the client only posts to URLs under
    ``base_url`` and follows no redirects. It gets an empty context, so the ~1 MB CA bundle is
    not loaded into every agent; should TLS ever be attempted with it, it verifies against no
    CA at all and refuses, never accepts.
    """
    if base_url.lower().startswith("https:"):
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names


class Connection:
    def __init__(
        self,
        base_url: str,
        access_key: str,
        secret_key: str,
        *,
        worker_id: str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(access_key, secret_key)
        headers = {
            "X-ClearML-Worker": worker_id or socket.gethostname(),
            "X-ClearML-Agent": AGENT_HEADER,
        }
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            headers=headers, timeout=timeout, transport=transport, verify=tls_for(self.base_url)
        )
        self._token: str | None = None
        self._expires: float | None = None
        self._lock = asyncio.Lock()
        self.logins = 0  # how many times we logged in (observable in tests and logs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, request: Request, retry_for: float | None) -> dict[str, Any]:
        """The ``data`` of the response, retrying transient failures within ``retry_for`` s."""
        return await self._retrying(lambda: self._attempt(request), request.endpoint, retry_for)

    async def token(self, retry_for: float | None) -> str:
        """A valid API token (logging in when needed): the SDK also shows it to its files host
        as ``Authorization: Bearer <token>``."""
        return await self._retrying(self._valid_token, LOGIN_ENDPOINT, retry_for)

    async def _retrying(
        self, attempt_once: Callable[[], Awaitable[T]], endpoint: str, retry_for: float | None
    ) -> T:
        retrying = AsyncRetrying(
            stop=stop_for(retry_for),
            wait=_backoff,
            retry=retry_if_exception_type(TransientError),
            before_sleep=_log_retry(endpoint),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await attempt_once()
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            budget = "ever" if retry_for is None else f"{retry_for:g} s"
            raise ServerUnavailable(
                0,
                0,
                f"server {self.base_url} unavailable (retried for {budget}): {cause}",
                endpoint,
            ) from cause
        raise AssertionError("tenacity neither returned nor raised")  # pragma: no cover

    async def _attempt(self, request: Request) -> dict[str, Any]:
        token = await self._valid_token()
        response = await self._send(request, token)
        if response.status_code == HTTP_UNAUTHORIZED:
            log.info("api token rejected, logging in again", endpoint=request.endpoint)
            token = await self._refresh(token)
            response = await self._send(request, token)
        return _data(response, request.endpoint)

    def _token_fresh(self) -> bool:
        if self._token is None:
            return False
        return self._expires is None or self._expires - time.time() > REFRESH_MARGIN_S

    async def _valid_token(self) -> str:
        if not self._token_fresh():
            async with self._lock:
                if not self._token_fresh():  # another call may have logged in meanwhile
                    await self._login()
        assert self._token is not None
        return self._token

    async def _refresh(self, stale: str) -> str:
        async with self._lock:
            if self._token == stale:
                await self._login()
        assert self._token is not None
        return self._token

    async def _login(self) -> None:
        url = endpoint_url(self.base_url, LOGIN_ENDPOINT)
        try:
            response = await self._http.post(
                url, content=encode_body({}), headers={"Content-Type": JSON}, auth=self._auth
            )
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        data = _data(response, LOGIN_ENDPOINT)
        token: str = require(data, "token", str, LOGIN_ENDPOINT)
        self._token, self._expires = token, token_expiry(token)
        self.logins += 1
        log.debug("api login", server=self.base_url, expires=self._expires)

    async def _send(self, request: Request, token: str) -> httpx.Response:
        headers = {"Content-Type": request.content_type, "Authorization": f"Bearer {token}"}
        if request.worker:
            headers["X-ClearML-Worker"] = request.worker
        url = endpoint_url(self.base_url, request.endpoint)
        timeout = self._timeout + request.holds
        try:
            return await self._http.post(
                url, content=request.content, headers=headers, timeout=timeout
            )
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc


def _data(response: httpx.Response, endpoint: str) -> dict[str, Any]:
    if response.status_code in RETRY_STATUSES:
        wait = retry_after_seconds(response.headers.get("retry-after"))
        raise TransientError(f"HTTP {response.status_code} from {endpoint}", wait)
    return parse_envelope(response.status_code, response.content, endpoint)


def _log_retry(endpoint: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "api call retrying",
            endpoint=endpoint,
            attempt=state.attempt_number,
            wait_s=round(wait, 2),
            error=str(error),
        )

    return before_sleep
