"""API errors: a result code, a subcode and a message, turned into the envelope by ``app``.

Subcodes follow the ClearML conventions the clients know (docs/clearml-protocol.md); the ones
without a ClearML counterpart are ours and documented in docs/server.md.
"""

from __future__ import annotations

# --- 400 subcodes -----------------------------------------------------------------------------
MALFORMED_BODY = 10  # body is not JSON / not an object
VALIDATION = 12  # a field is missing or has the wrong type or value
INVALID_TASK_ID = 101
INVALID_TASK_STATUS = 110
INVALID_MODEL_ID = 201
INVALID_PROJECT_ID = 401
PROJECT_EXISTS = 402
INVALID_QUEUE_ID = 701
QUEUE_NOT_EMPTY = 702
QUEUE_EXISTS = 705
TASK_ALREADY_QUEUED = 706
NO_DEFAULT_QUEUE = 707
INVALID_WORKER_ID = 1001
# --- 401 subcodes -----------------------------------------------------------------------------
MISSING_CREDENTIALS = 10
BAD_CREDENTIALS = 20
INVALID_TOKEN = 21
EXPIRED_TOKEN = 22


class ApiError(Exception):
    """A request the server refuses; ``code`` becomes both the HTTP status and result_code."""

    def __init__(self, code: int, subcode: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.subcode = subcode
        self.msg = msg


def bad_request(msg: str, subcode: int = VALIDATION) -> ApiError:
    return ApiError(400, subcode, msg)


def unauthorized(msg: str, subcode: int = BAD_CREDENTIALS) -> ApiError:
    return ApiError(401, subcode, msg)


def not_found(msg: str) -> ApiError:
    return ApiError(404, 0, msg)
