"""Overrides: what a user edited in the UI reaches any script, with or without the clearml SDK.

Planning is pure: :func:`plan_overrides` turns the task's recorded parameters into values
(:class:`Overrides`); :func:`apply_overrides` is the one side effect (configuration files).

- Section ``Args`` (rendered by :mod:`agent.pipeline.args`). For a script that does not use the
  clearml SDK, the values become command line arguments. Style ``"argparse"``: ``--name value``;
  a boolean ``true`` is the bare flag ``--name`` (argparse ``store_true``) and ``false`` leaves
  it out; a list (``[1, 2]``, as the SDK
  records argparse ``nargs``) becomes ``--name 1 2``; a one-letter name becomes ``-n``; a name
  recorded with dashes (``--lr``, as ``Task.create(argparse_args=[("--lr", "0.1")])`` stores it)
  is used as written. Style ``"hydra"``: ``name=value`` (``+name``/``++name`` kept). Arguments the
  entry point already carries (``train.py --lr 0.1 data.csv``) are replaced in place, in their
  own spelling (``--batch-size`` matches ``batch_size``) and form (``--lr=0.1``, ``--flag true``);
  positional arguments are kept. Empty values are not passed (the script's default applies).
  For a script that uses the SDK nothing is passed: the SDK applies ``Args`` itself in remote
  mode, and passing them twice would break (positional dests recorded as ``Args/data``).
- Section ``Environment``: environment variables; invalid names and names the agent sets are
  refused and reported. (The SDK also copies them into ``os.environ``, but only after
  ``Task.init``: exporting them first is harmless and reaches code that runs at import.)
- ``configuration`` objects: written to ``<task dir>/config/<name>.<ext>`` (extension from the
  item's type: yaml, json, conf for the SDK's HOCON ``dictionary``, txt...), each path exported as
  ``CONVEYOR_CONFIG_<NAME>``. ``${CONVEYOR_CONFIG_<NAME>}`` in an argument is replaced by the path
  (:func:`expand_references`), so ``train.py --config ${CONVEYOR_CONFIG_TRAIN}`` reads the edited
  file.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.api.models import ConfigItem, Param, TaskSpec
from agent.pipeline.args import STYLE_ARGPARSE, STYLES, collect_args, rewrite_args
from agent.pipeline.console import Console
from agent.pipeline.envnames import valid_env_name

ARGS_SECTION = "Args"
RETRY_SECTION = "Conveyor"  # the agent's own (agent/retry.py): not the script's
ENV_SECTION = "Environment"
CONFIG_DIR = "config"
CONFIG_ENV_PREFIX = "CONVEYOR_CONFIG_"
SDK_PACKAGE = "clearml"
SUMMARY_PREFIX = "overrides: "

# Names the agent itself sets or relies on: a task parameter must not change them.
PROTECTED_ENV_PREFIXES = ("CLEARML_", "CONVEYOR_", "TRAINS_")
PROTECTED_ENV_NAMES = frozenset(
    {
        "PATH",
        "VIRTUAL_ENV",
        "PYTHONHOME",
        "PYTHONUNBUFFERED",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
    }
)

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_SDK_IMPORT = re.compile(r"^\s*(?:import\s+clearml\b|from\s+clearml(?:\.\w+)*\s+import\b)", re.M)
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_UNSAFE_VAR_CHARS = re.compile(r"[^A-Za-z0-9]+")
_SAFE_EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")
_REFERENCE = re.compile(r"\$\{(CONVEYOR_[A-Z0-9_]+)\}")

# configuration item type -> file extension (other short alphanumeric types are used as-is:
# the SDK records a connected file's own suffix as the type).
_EXTENSIONS = {
    "": "txt",
    "text": "txt",
    "string": "txt",
    "str": "txt",
    "dictionary": "conf",  # the SDK writes connected dicts as HOCON
    "hocon": "conf",
}


@dataclass(frozen=True)
class Overrides:
    """What to change for one task run. ``files`` maps a path relative to the task dir to its
    content; ``env_for_files`` maps an environment variable to one of those paths."""

    argv: tuple[str, ...]  # the entry point's arguments, overrides applied
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    env_for_files: Mapping[str, str] = field(default_factory=dict)
    summary: tuple[str, ...] = ()  # console lines ("overrides: lr=0.7 (was 0.01), batch=64")
    refused: tuple[str, ...] = ()  # what was not applied, and why
    sdk: bool = False  # the script uses the clearml SDK: Args are left to it

    def report(self, console: Console) -> None:
        """Print the summary (info) and the refusals (error) into the task's console."""
        for line in self.summary:
            console.info(line)
        for line in self.refused:
            console.error(f"{SUMMARY_PREFIX}{line}")


# --- SDK detection -------------------------------------------------------------------------


def uses_sdk(task: TaskSpec, script_text: str | None = None) -> bool:
    """Pure: does the task's script use the clearml SDK?

    True when ``clearml`` is among the recorded requirements, or the script text (a literal
    script's, or ``script_text`` read from the checkout by the caller) imports it.
    """
    if requires_sdk(task.script.requirements_pip):
        return True
    if task.script.is_literal_script and imports_sdk(task.script.diff):
        return True
    return script_text is not None and imports_sdk(script_text)


def requires_sdk(requirements: str) -> bool:
    """``clearml`` (any version, extras or direct reference) is a requirement line."""
    for line in requirements.splitlines():
        match = _REQUIREMENT_NAME.match(line)
        if match and _normalise_project(match.group(1)) == SDK_PACKAGE:
            return True
    return False


def imports_sdk(text: str) -> bool:
    return bool(_SDK_IMPORT.search(text))


def _normalise_project(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- planning ------------------------------------------------------------------------------


def plan_overrides(
    task: TaskSpec,
    entry_args: Sequence[str],
    *,
    style: str = STYLE_ARGPARSE,
    sdk: bool | None = None,
    reserved_env: Collection[str] = (),
) -> Overrides:
    """Pure: the overrides for one run of ``task``.

    ``entry_args`` are the arguments recorded after the entry point; ``sdk`` None detects SDK
    use with :func:`uses_sdk`; ``reserved_env`` are names the agent sets for the task (its plan's
    environment): the ``Environment`` section may not change them.
    """
    if style not in STYLES:
        raise ValueError(f"unknown argument style {style!r} (one of {', '.join(STYLES)})")
    sdk = uses_sdk(task) if sdk is None else sdk
    args_section = task.hyperparams.get(ARGS_SECTION, {})
    refused: list[str] = []
    summary: list[str] = []
    if sdk:
        argv = tuple(entry_args)
        shown = [_show(p.name, p.value, "") for p in args_section.values()]
        if shown:
            summary.append(f"{SUMMARY_PREFIX}{', '.join(shown)} (Args applied by the clearml SDK)")
    else:
        args, skipped = collect_args(args_section.values(), style, refused)
        argv, was = rewrite_args(tuple(entry_args), args, style)
        shown = [_show(a.name, a.value, was.get(a.key, a.default)) for a in args]
        if shown:
            summary.append(SUMMARY_PREFIX + ", ".join(shown))
        if skipped:
            summary.append(f"{SUMMARY_PREFIX}empty, not passed: {', '.join(skipped)}")
        summary.extend(_sdk_only_sections(task))
    env = _plan_env(task.hyperparams.get(ENV_SECTION, {}), reserved_env, refused)
    if env:
        summary.append(f"{SUMMARY_PREFIX}environment {', '.join(sorted(env))}")
    files, env_for_files = _plan_files(task.configuration)
    for var, path in env_for_files.items():
        summary.append(f"{SUMMARY_PREFIX}configuration → {path} (${{{var}}})")
    return Overrides(
        argv=argv,
        env=env,
        files=files,
        env_for_files=env_for_files,
        summary=tuple(summary),
        refused=tuple(refused),
        sdk=sdk,
    )


def _show(name: str, value: str, was: str) -> str:
    shown = f"{name.lstrip('-')}={value}"
    return f"{shown} (was {was})" if was and was != value else shown


def _sdk_only_sections(task: TaskSpec) -> list[str]:
    """Hyperparameter sections only the SDK reads (``General`` from ``connect(dict)``...)."""
    others = [
        name
        for name, params in task.hyperparams.items()
        if name not in (ARGS_SECTION, ENV_SECTION, RETRY_SECTION) and params
    ]
    if not others:
        return []
    return [
        f"{SUMMARY_PREFIX}section(s) {', '.join(others)} are read only by the clearml SDK, "
        "which this script does not use"
    ]


# --- Environment ---------------------------------------------------------------------------


def _plan_env(
    section: Mapping[str, Param], reserved: Collection[str], refused: list[str]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for param in section.values():
        why = _env_refusal(param.name, param.value, reserved)
        if why:
            refused.append(f"environment variable {param.name!r} refused: {why}")
        else:
            env[param.name] = param.value
    return env


def _env_refusal(name: str, value: str, reserved: Collection[str]) -> str:
    if not valid_env_name(name):
        return "not a valid variable name (letters, digits and _, not starting with a digit)"
    if "\0" in value:
        return "its value contains a NUL character"
    if name.startswith(PROTECTED_ENV_PREFIXES) or name in PROTECTED_ENV_NAMES:
        return "the agent sets it"
    if name in reserved:
        return "the agent sets it for this task"
    return ""


# --- configuration -------------------------------------------------------------------------


def _plan_files(items: Mapping[str, ConfigItem]) -> tuple[dict[str, str], dict[str, str]]:
    files: dict[str, str] = {}
    env_for_files: dict[str, str] = {}
    for item in items.values():
        filename, var = config_file_name(item.name, item.type)
        filename, var = _unique(filename, var, files, env_for_files)
        path = f"{CONFIG_DIR}/{filename}"
        files[path] = item.value
        env_for_files[var] = path
    return files, env_for_files


def config_file_name(name: str, item_type: str) -> tuple[str, str]:
    """Pure: ``("train", "yaml")`` → ``("train.yaml", "CONVEYOR_CONFIG_TRAIN")``."""
    extension = config_extension(item_type)
    stem = _UNSAFE_FILE_CHARS.sub("_", name.strip()).strip("._") or "config"
    if stem.lower().endswith(f".{extension}"):
        stem = stem[: -len(extension) - 1] or "config"
    var_part = _UNSAFE_VAR_CHARS.sub("_", stem).strip("_").upper() or "CONFIG"
    return f"{stem}.{extension}", f"{CONFIG_ENV_PREFIX}{var_part}"


def config_extension(item_type: str) -> str:
    kind = item_type.strip().lower().lstrip(".")
    if kind in _EXTENSIONS:
        return _EXTENSIONS[kind]
    return kind if _SAFE_EXTENSION.match(kind) else "txt"


def _unique(
    filename: str, var: str, files: Mapping[str, str], env: Mapping[str, str]
) -> tuple[str, str]:
    """Two items whose names sanitise alike get ``_2``, ``_3``... (file and variable)."""
    taken = {path.rsplit("/", 1)[-1].lower() for path in files}
    if filename.lower() not in taken and var not in env:
        return filename, var
    stem, _, extension = filename.rpartition(".")
    n = 2
    while f"{stem}_{n}.{extension}".lower() in taken or f"{var}_{n}" in env:
        n += 1
    return f"{stem}_{n}.{extension}", f"{var}_{n}"


# --- the side effect -----------------------------------------------------------------------


def apply_overrides(overrides: Overrides, task_dir: Path) -> dict[str, str]:
    """Write the configuration files under ``task_dir``; the environment to add to the task's
    (the ``Environment`` section and one absolute path per configuration file)."""
    for relative, content in overrides.files.items():
        path = task_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write(content)
    env = dict(overrides.env)
    env.update({var: str(task_dir / rel) for var, rel in overrides.env_for_files.items()})
    return env


def expand_references(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """Pure: ``${CONVEYOR_…}`` in arguments replaced by its value from ``env`` (the paths of
    configuration files and input models); other text, and unknown names, left as they are."""

    def value(match: re.Match[str]) -> str:
        return env.get(match.group(1), match.group(0))

    return tuple(_REFERENCE.sub(value, token) for token in argv)
