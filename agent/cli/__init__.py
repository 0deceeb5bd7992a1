"""The ``conveyor`` command line (the entry point is ``agent.cli:main``)."""

from agent.cli.root import main

__all__ = ["main"]
