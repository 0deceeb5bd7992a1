"""The request fields each write endpoint takes; anything else is refused, never ignored.

The rule (docs/server.md): a field that would change what is written and that the server
does not implement is refused with 400/12 naming the field and the endpoint, before anything
is written; fields that only change presentation, or metadata the server may safely ignore,
are declared in ``ignored`` (and listed in docs/clearml-compat.md); some flags are taken only
switched off. ``registry.endpoint(..., accepts=...)`` checks every call against the
declaration (the REST API and the web console alike), so a handler only sees what it knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.server.errors import bad_request
from agent.server.fields import opt_bool
from agent.server.listing import TRANSPORT


@dataclass(frozen=True)
class Accepts:
    """``fields``: read and honoured by the handler. ``ignored``: presentation or metadata,
    accepted and dropped. ``off_only``: boolean flags whose ``false`` (ClearML's behaviour
    without them) the server implements and whose ``true`` it refuses, with the reason."""

    fields: frozenset[str]
    ignored: frozenset[str] = frozenset()
    off_only: Mapping[str, str] = field(default_factory=dict)

    def known(self) -> frozenset[str]:
        return self.fields | self.ignored | frozenset(self.off_only) | TRANSPORT


def accepts(
    fields: str, *, ignored: str = "", off_only: Mapping[str, str] | None = None
) -> Accepts:
    """An ``Accepts`` from space-separated field names."""
    return Accepts(frozenset(fields.split()), frozenset(ignored.split()), dict(off_only or {}))


def refusal(endpoint: str, name: str) -> str:
    return (
        f"field '{name}' is not supported by {endpoint} (refused rather than ignored: it "
        "would change what is written)"
    )


def check(endpoint: str, body: Mapping[str, Any], spec: Accepts) -> None:
    """400/12 for the first field of ``body`` that ``spec`` does not take."""
    for name in body:
        if name in spec.fields or name in spec.ignored or name in TRANSPORT:
            continue
        reason = spec.off_only.get(name)
        if reason is None:
            raise bad_request(refusal(endpoint, name))
        if opt_bool(body, name):
            raise bad_request(f"field '{name}' of {endpoint}: true is not supported: {reason}")
