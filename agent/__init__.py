"""Conveyor: a worker agent daemon for ML task queues speaking the ClearML REST protocol."""

__version__ = "0.1.0"
