"""Typed, frozen views of the server's documents, parsed at the edge.

A document that cannot be parsed raises :class:`TaskDocumentError` with a message a user can act
on ("task field script.entry_point must be a string, got 3"); the agent fails that task with the
message and goes on serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class TaskDocumentError(ValueError):
    """The task document is malformed; the message says which field and why."""


def _obj(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TaskDocumentError(f"task field {where}{key} must be an object, got {value!r:.80}")
    return value


def _str(doc: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise TaskDocumentError(f"task field {where}{key} must be a string, got {value!r:.80}")
    return value


@dataclass(frozen=True)
class ScriptSpec:
    repository: str = ""
    branch: str = ""
    version_num: str = ""  # commit id
    tag: str = ""
    entry_point: str = ""
    working_dir: str = "."
    binary: str = ""  # e.g. "python3.11"; empty: the agent's default
    diff: str = ""
    requirements_pip: str = ""  # requirements.txt text recorded on the task

    @property
    def is_literal_script(self) -> bool:
        """True when ``diff`` holds the script itself rather than a patch (no repository)."""
        return bool(self.diff) and not self.diff.lstrip().startswith("diff ")

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> ScriptSpec:
        where = "script."
        reqs = _obj(doc, "requirements", where)
        pip = reqs.get("pip", "")
        if isinstance(pip, list):
            pip = "\n".join(str(p) for p in pip)
        if not isinstance(pip, str):
            raise TaskDocumentError(
                f"task field script.requirements.pip must be text, got {pip!r:.80}"
            )
        return cls(
            repository=_str(doc, "repository", where),
            branch=_str(doc, "branch", where),
            version_num=_str(doc, "version_num", where),
            tag=_str(doc, "tag", where),
            entry_point=_str(doc, "entry_point", where),
            working_dir=_str(doc, "working_dir", where) or ".",
            binary=_str(doc, "binary", where),
            diff=_str(doc, "diff", where),
            requirements_pip=pip,
        )


@dataclass(frozen=True)
class ContainerSpec:
    image: str = ""
    arguments: str = ""
    setup_shell_script: str = ""

    @classmethod
    def parse(cls, doc: Mapping[str, Any], legacy_docker_cmd: str = "") -> ContainerSpec:
        where = "container."
        image = _str(doc, "image", where)
        arguments = _str(doc, "arguments", where)
        if not image and legacy_docker_cmd.strip():
            image, _, arguments = legacy_docker_cmd.strip().partition(" ")
        return cls(
            image=image,
            arguments=arguments,
            setup_shell_script=_str(doc, "setup_shell_script", where),
        )


@dataclass(frozen=True)
class Param:
    section: str
    name: str
    value: str
    type: str = ""
    description: str = ""


@dataclass(frozen=True)
class ConfigItem:
    name: str
    value: str
    type: str = ""


@dataclass(frozen=True)
class InputModelRef:
    name: str
    model_id: str


def _parse_hyperparams(doc: Mapping[str, Any]) -> dict[str, dict[str, Param]]:
    out: dict[str, dict[str, Param]] = {}
    for section, params in doc.items():
        if not isinstance(params, Mapping):
            raise TaskDocumentError(f"task field hyperparams.{section} must be an object")
        parsed: dict[str, Param] = {}
        for name, p in params.items():
            if not isinstance(p, Mapping):
                raise TaskDocumentError(
                    f"task field hyperparams.{section}.{name} must be an object"
                )
            value = p.get("value", "")
            parsed[name] = Param(
                section=str(section),
                name=str(p.get("name", name)),
                value="" if value is None else str(value),
                type=str(p.get("type") or ""),
                description=str(p.get("description") or ""),
            )
        out[str(section)] = parsed
    return out


def _parse_configuration(doc: Mapping[str, Any]) -> dict[str, ConfigItem]:
    out: dict[str, ConfigItem] = {}
    for name, item in doc.items():
        if not isinstance(item, Mapping):
            raise TaskDocumentError(f"task field configuration.{name} must be an object")
        value = item.get("value", "")
        out[str(name)] = ConfigItem(
            name=str(item.get("name", name)),
            value="" if value is None else str(value),
            type=str(item.get("type") or ""),
        )
    return out


def _parse_input_models(doc: Mapping[str, Any]) -> tuple[InputModelRef, ...]:
    entries = doc.get("input") or []
    if not isinstance(entries, list):
        raise TaskDocumentError("task field models.input must be a list")
    refs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("model"), str):
            raise TaskDocumentError(
                f"task field models.input[{i}] must be an object with a model id"
            )
        refs.append(
            InputModelRef(name=str(entry.get("name") or f"input{i}"), model_id=entry["model"])
        )
    return tuple(refs)


@dataclass(frozen=True)
class TaskSpec:
    id: str
    name: str = ""
    project: str = ""
    status: str = ""
    status_message: str = ""
    type: str = ""
    script: ScriptSpec = field(default_factory=ScriptSpec)
    container: ContainerSpec = field(default_factory=ContainerSpec)
    queue_id: str = ""
    hyperparams: Mapping[str, Mapping[str, Param]] = field(default_factory=dict)
    configuration: Mapping[str, ConfigItem] = field(default_factory=dict)
    input_models: tuple[InputModelRef, ...] = ()
    output_destination: str = ""

    @classmethod
    def parse(cls, doc: Any) -> TaskSpec:
        if not isinstance(doc, Mapping):
            raise TaskDocumentError(f"task document must be an object, got {type(doc).__name__}")
        task_id = doc.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise TaskDocumentError("task document has no id")
        execution = _obj(doc, "execution", "")
        return cls(
            id=task_id,
            name=_str(doc, "name", ""),
            project=_str(doc, "project", ""),
            status=_str(doc, "status", ""),
            status_message=_str(doc, "status_message", ""),
            type=_str(doc, "type", ""),
            script=ScriptSpec.parse(_obj(doc, "script", "")),
            container=ContainerSpec.parse(
                _obj(doc, "container", ""), _str(execution, "docker_cmd", "execution.")
            ),
            queue_id=_str(execution, "queue", "execution."),
            hyperparams=_parse_hyperparams(_obj(doc, "hyperparams", "")),
            configuration=_parse_configuration(_obj(doc, "configuration", "")),
            input_models=_parse_input_models(_obj(doc, "models", "")),
            output_destination=_str(_obj(doc, "output", ""), "destination", "output."),
        )


@dataclass(frozen=True)
class ModelInfo:
    """A model registered on the server (``models.get_by_id``): where its weights live."""

    id: str
    name: str = ""
    uri: str = ""  # e.g. file:///mnt/shared/models/p/t.abc/models/best.pt
    framework: str = ""
    ready: bool = False
    comment: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)  # key -> value
    system_tags: tuple[str, ...] = ()  # e.g. "package": a zipped folder

    @classmethod
    def parse(cls, doc: Any) -> ModelInfo:
        if not isinstance(doc, Mapping):
            raise TaskDocumentError(f"model document must be an object, got {type(doc).__name__}")
        model_id = doc.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise TaskDocumentError("model document has no id")
        return cls(
            id=model_id,
            name=_str(doc, "name", "model."),
            uri=_str(doc, "uri", "model."),
            framework=_str(doc, "framework", "model."),
            ready=bool(doc.get("ready")),
            comment=_str(doc, "comment", "model."),
            metadata=_parse_metadata(_obj(doc, "metadata", "model.")),
            system_tags=_str_list(doc, "system_tags", "model."),
        )


def _str_list(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskDocumentError(
            f"task field {where}{key} must be a list of strings, got {value!r:.80}"
        )
    return tuple(value)


def _parse_metadata(doc: Mapping[str, Any]) -> dict[str, str]:
    """ClearML stores ``{key: {key, type, value}}``; older documents hold plain values."""
    out: dict[str, str] = {}
    for key, item in doc.items():
        value = item.get("value") if isinstance(item, Mapping) else item
        out[str(key)] = "" if value is None else str(value)
    return out
