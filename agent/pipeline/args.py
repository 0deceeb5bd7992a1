"""The ``Args`` section as command-line arguments (pure): argparse or hydra style, values replaced
in place in the entry point's own spelling and form, positional arguments kept.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.api.models import Param

STYLE_ARGPARSE = "argparse"
STYLE_HYDRA = "hydra"
STYLES = (STYLE_ARGPARSE, STYLE_HYDRA)
END_OF_OPTIONS = "--"
_BOOL_WORDS = frozenset({"true", "false"})
_TYPED_TRUE = frozenset({"true", "1", "yes", "on"})
_TYPED_BOOL = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off"})
_BOOL_TYPES = frozenset({"bool", "boolean"})
_UNTYPED = frozenset({"", "str", "string"})
_NUMBER = re.compile(r"^-\d+(\.\d*)?([eE][-+]?\d+)?$|^-\.\d+([eE][-+]?\d+)?$")
_OPTION_NAME = re.compile(r"^-{0,2}[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_HYDRA_NAME = re.compile(r"^(\+{1,2})?([A-Za-z0-9_][A-Za-z0-9_.\-/@]*)$")
_DEFAULT_IN_DESCRIPTION = re.compile(r"(?:^|,\s*)default:\s*(?P<value>.*)$")
Kind = Literal["flag", "list", "scalar"]


@dataclass(frozen=True)
class _Arg:
    """One ``Args`` value, ready to render."""

    name: str  # as recorded
    key: tuple[str, str]  # ("opt", canonical option) or ("kv", hydra key): matches entry tokens
    kind: Kind
    value: str  # as recorded
    items: tuple[str, ...] = ()  # list values
    default: str = ""  # from the SDK's "default: x" description, if any


@dataclass(frozen=True)
class _Match:
    spelling: str  # the option or key as the entry point wrote it
    form: Literal["separate", "inline", "flag"]
    old: str  # the value it carried


def collect_args(
    params: Iterable[Param], style: str, refused: list[str]
) -> tuple[list[_Arg], list[str]]:
    """The values to pass, in recorded order; names of empty ones; refusals appended."""
    args: list[_Arg] = []
    skipped: list[str] = []
    seen: set[tuple[str, str]] = set()
    for param in params:
        key = _arg_key(param.name, style)
        if key is None:
            refused.append(f"argument {param.name!r} refused: not a valid {style} name")
            continue
        if key in seen:
            refused.append(f"argument {param.name!r} refused: given twice")
            continue
        seen.add(key)
        if param.value == "":
            skipped.append(param.name.lstrip("-"))
            continue
        kind, items = _classify(param)
        default = _default_from(param.description)
        args.append(_Arg(param.name, key, kind, param.value, items, default))
    return args, skipped


def _arg_key(name: str, style: str) -> tuple[str, str] | None:
    """How a recorded name matches tokens on the command line; None if it cannot be one."""
    if name.startswith("-") or style == STYLE_ARGPARSE:
        return ("opt", _canonical(name)) if _OPTION_NAME.match(name) else None
    match = _HYDRA_NAME.match(name)
    return ("kv", match.group(2)) if match else None


def _canonical(option: str) -> str:
    """``--batch-size``, ``--batch_size`` and ``batch_size`` are one option."""
    return option.lstrip("-").replace("-", "_")


def _classify(param: Param) -> tuple[Kind, tuple[str, ...]]:
    value, kind = param.value.strip(), param.type.strip().lower()
    if kind in _BOOL_TYPES and value.lower() in _TYPED_BOOL:
        return "flag", ()
    if kind in _UNTYPED and value.lower() in _BOOL_WORDS:
        return "flag", ()
    items = _list_items(value)
    if items is not None:
        return "list", items
    return "scalar", ()


def _list_items(value: str) -> tuple[str, ...] | None:
    """``"[1, 'a b']"`` (a Python list as the SDK records ``nargs``) → ``("1", "a b")``."""
    if not (value.startswith("[") and value.endswith("]")):
        return None
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(parsed, list | tuple):
        return None
    return tuple(str(item) for item in parsed)


def _default_from(description: str) -> str:
    """The SDK describes an argparse option without help as ``"default: 0.01"``."""
    match = _DEFAULT_IN_DESCRIPTION.search(description.strip())
    return match.group("value").strip() if match else ""


def _is_true(arg: _Arg) -> bool:
    return arg.value.strip().lower() in _TYPED_TRUE


def _is_option(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NUMBER.match(token)


def _token_key(token: str) -> tuple[tuple[str, str], str, str | None] | None:
    """A command-line token as (key, spelling, inline value), or None for a positional."""
    if _is_option(token):
        spelling, eq, inline = token.partition("=")
        if eq and not spelling.startswith("--"):
            spelling, inline, eq = token, "", ""  # "-x=1" is not argparse's inline form
        return ("opt", _canonical(spelling)), spelling, inline if eq else None
    key, eq, value = token.partition("=")
    match = _HYDRA_NAME.match(key)
    if eq and match:
        return ("kv", match.group(2)), key, value
    return None


def rewrite_args(
    entry: tuple[str, ...], args: Sequence[_Arg], style: str
) -> tuple[tuple[str, ...], dict[tuple[str, str], str]]:
    """The entry point's arguments with ``args`` applied; the values they replaced, by key."""
    cut = entry.index(END_OF_OPTIONS) if END_OF_OPTIONS in entry else len(entry)
    head, tail = entry[:cut], entry[cut:]
    by_key = {a.key: a for a in args}
    out: list[str] = []
    was: dict[tuple[str, str], str] = {}
    i = 0
    while i < len(head):
        parsed = _token_key(head[i]) if style == STYLE_HYDRA or _is_option(head[i]) else None
        arg = by_key.get(parsed[0]) if parsed else None
        if parsed is None or arg is None:
            out.append(head[i])
            i += 1
            continue
        _, spelling, inline = parsed
        match, i = _consume(head, i, arg, spelling, inline)
        if arg.key not in was:
            was[arg.key] = match.old
            out.extend(_render(arg, match))
    for arg in args:
        if arg.key not in was:
            out.extend(_render(arg, None))
    return (*out, *tail), was


def _consume(
    tokens: Sequence[str], i: int, arg: _Arg, spelling: str, inline: str | None
) -> tuple[_Match, int]:
    """How the entry point wrote ``arg`` at ``tokens[i]``, and the index after it."""
    if inline is not None:
        return _Match(spelling, "inline", inline), i + 1
    j = i + 1
    following = tokens[j:]
    if arg.kind == "flag":
        if following and following[0].lower() in _TYPED_BOOL:
            return _Match(spelling, "separate", following[0]), j + 1
        return _Match(spelling, "flag", "true"), j
    taken: list[str] = []
    for token in following:
        if _is_option(token) or (taken and arg.kind == "scalar"):
            break
        taken.append(token)
    return _Match(spelling, "separate", " ".join(taken)), j + len(taken)


def _render(arg: _Arg, match: _Match | None) -> list[str]:
    """The tokens for ``arg``, in the spelling and form the entry point used (if it did)."""
    if arg.key[0] == "kv":
        spelling = match.spelling if match else arg.name
        value = ("true" if _is_true(arg) else "false") if arg.kind == "flag" else arg.value
        return [f"{spelling}={value}"]
    option = match.spelling if match else _default_spelling(arg.name)
    if arg.kind == "flag":
        if match and match.form in ("separate", "inline"):
            value = arg.value.strip()
            return [f"{option}={value}"] if match.form == "inline" else [option, value]
        return [option] if _is_true(arg) else []
    if arg.kind == "list":
        return [option, *arg.items] if arg.items else []
    if (match and match.form == "inline") or (
        arg.value.startswith("-") and option.startswith("--")
    ):
        return [f"{option}={arg.value}"]
    return [option, arg.value]


def _default_spelling(name: str) -> str:
    if name.startswith("-"):
        return name
    return f"-{name}" if len(name) == 1 else f"--{name}"
