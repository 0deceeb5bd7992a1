"""Running a task's process: spawn, pump logs, sample metrics, abort, reap."""
