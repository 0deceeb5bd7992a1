"""What the planner is given besides the task (pure values): this host's facts, how tasks reach
the server, and the GPUs an operator gave the agent split among its slots.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostFacts:
    """What the planner needs to know about the machine, gathered once by the daemon."""

    hostname: str
    gpu_count: int = 0
    agent_python: str = "3.11"  # major.minor of the agent's interpreter: the default for tasks


@dataclass(frozen=True)
class ServerAccess:
    """How a task's own SDK reaches the control plane (the agent passes this on)."""

    api_host: str
    web_host: str
    files_host: str
    access_key: str
    secret_key: str


def allocate_gpus(request: str, gpu_count: int, slots: int) -> list[tuple[int, ...]]:
    """Split the GPUs an operator gave the agent among its slots, one tuple per slot.

    ``"none"`` → no GPUs for any slot; ``"all"`` → every visible GPU; ``"0,1"`` → those.
    GPUs are divided as evenly as possible, in order; with fewer GPUs than slots, the
    GPU-less slots get an empty tuple (they still run CPU tasks).
    """
    request = request.strip()
    if request == "none":
        chosen: list[int] = []
    elif request == "all":
        chosen = list(range(gpu_count))
    else:
        chosen = [int(p) for p in request.split(",") if p.strip()]
    per_slot = max(1, len(chosen) // slots) if chosen else 0
    out: list[tuple[int, ...]] = []
    for i in range(slots):
        out.append(tuple(chosen[i * per_slot : (i + 1) * per_slot]) if per_slot else ())
    if chosen and slots == 1:
        out[0] = tuple(chosen)
    return out
