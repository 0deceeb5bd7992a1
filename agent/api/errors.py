"""Typed errors of the API client: the caller catches what it can act on.

``error_from`` maps the server's ``(result_code, result_subcode)`` to a class; it is pure and
unit-tested. Every error carries the endpoint it came from so a log line says where it failed.
"""

from __future__ import annotations

# ClearML result subcodes that mean "no such object" (400/…) and the state conflicts we name.
INVALID_TASK_ID = 101
INVALID_TASK_STATUS = 110
INVALID_MODEL_ID = 201
INVALID_QUEUE_ID = 701
TASK_ALREADY_QUEUED = 706
NO_DEFAULT_QUEUE = 707
NOT_FOUND_SUBCODES = frozenset({INVALID_TASK_ID, INVALID_MODEL_ID, INVALID_QUEUE_ID})

HTTP_BAD_REQUEST = 400
HTTP_UNAUTHORIZED = 401
HTTP_NOT_FOUND = 404


class ApiError(Exception):
    """The server refused a call (or could not be understood); ``code``/``subcode`` are ClearML's
    ``result_code``/``result_subcode`` (0 when the response carried none)."""

    def __init__(self, code: int, subcode: int, message: str, endpoint: str) -> None:
        self.code = code
        self.subcode = subcode
        self.message = message
        self.endpoint = endpoint
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.message} ({self.code}/{self.subcode})"

    def __reduce__(self) -> tuple[type[ApiError], tuple[int, int, str, str]]:
        return (type(self), (self.code, self.subcode, self.message, self.endpoint))


class AuthError(ApiError):
    """401: wrong credentials, or a token the server no longer accepts after a fresh login."""


class NotFoundError(ApiError):
    """404 (unknown endpoint) or an invalid task / model / queue id."""


class InvalidStateError(ApiError):
    """400/110: the task's status does not allow this (e.g. ``started`` on a completed task)."""


class AlreadyQueuedError(ApiError):
    """400/706: ``tasks.enqueue`` of a task that is already in a queue."""


class ProtocolError(ApiError):
    """The response is not a ClearML envelope (no ``meta``, not JSON, ``data`` not an object)."""


class ServerUnavailable(ApiError):
    """The retry budget ran out: connection errors, timeouts, 502/503/429 all the way."""


# (result_code, result_subcode) → error class; a subcode of None matches any subcode.
_BY_CODE: dict[tuple[int, int | None], type[ApiError]] = {
    (HTTP_UNAUTHORIZED, None): AuthError,
    (HTTP_NOT_FOUND, None): NotFoundError,
    **{(HTTP_BAD_REQUEST, sub): NotFoundError for sub in NOT_FOUND_SUBCODES},
    (HTTP_BAD_REQUEST, INVALID_TASK_STATUS): InvalidStateError,
    (HTTP_BAD_REQUEST, TASK_ALREADY_QUEUED): AlreadyQueuedError,
}


def error_from(code: int, subcode: int, message: str, endpoint: str) -> ApiError:
    """Pure: the typed error for a refusal the server answered with."""
    cls = _BY_CODE.get((code, subcode)) or _BY_CODE.get((code, None)) or ApiError
    return cls(code, subcode, message, endpoint)
