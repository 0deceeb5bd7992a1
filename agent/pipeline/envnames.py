"""Environment variable names a task may be given (shared by planning and overrides)."""

from __future__ import annotations

import re

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def valid_env_name(name: str) -> bool:
    """A POSIX shell-safe variable name: letters, digits and ``_``, not starting with a digit."""
    return bool(_ENV_NAME.match(name))
