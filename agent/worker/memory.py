"""Memory an idle agent gives back: what start-up and each task freed, returned to the system.

glibc keeps freed heap pages for reuse (about 4 MB after start-up: imports, the first requests'
TLS and JSON); ``malloc_trim(0)`` hands them back. Called when the agent turns idle, so an agent
that waits holds only what it needs. A libc without ``malloc_trim`` (musl) makes it a no-op.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked_up = False


def release_free_memory() -> bool:
    """Return freed heap memory to the system; False where the libc cannot."""
    global _trim, _looked_up
    if not _looked_up:
        _looked_up = True
        try:
            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _trim = None
    if _trim is None:
        return False
    _trim(0)
    return True
