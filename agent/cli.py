"""The ``conveyor`` command line."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Conveyor: a worker agent for ML task queues (ClearML protocol)."""
