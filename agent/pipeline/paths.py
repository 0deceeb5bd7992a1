"""Filesystem steps the stages share: remove whatever a path holds (a file, a link, a tree)."""

from __future__ import annotations

import shutil
from pathlib import Path


def remove_path(path: Path) -> None:
    """Remove a file, a symlink (not its target) or a directory tree; nothing there is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
