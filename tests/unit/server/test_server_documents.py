"""Pure task-document helpers: defaults, validation, edit merging, projections, tag filters."""

from __future__ import annotations

from typing import Any

import pytest

from agent.server.documents import (
    apply_edit,
    check_fields,
    deep_merge,
    normalize_task,
    project_fields,
)
from agent.server.errors import ApiError
from agent.server.filters import tags_match


def test_normalize_fills_nulls_with_objects() -> None:
    doc = normalize_task({"id": "t", "script": None, "models": {"input": None}, "tags": None})
    empty = {"execution": {"artifacts": []}, "script": {"requirements": {}}}
    for field in ("script", "execution", "output", "runtime", "container", "hyperparams"):
        assert doc[field] == empty.get(field, {})
    kept = normalize_task({"script": {"requirements": {"pip": "six"}, "entry_point": "a.py"}})
    assert kept["script"] == {"requirements": {"pip": "six"}, "entry_point": "a.py"}
    assert doc["models"] == {"input": [], "output": []}
    assert doc["tags"] == [] and doc["status"] == "created"


def test_check_fields_keeps_known_fields_and_maps_output_dest() -> None:
    out = check_fields({"name": "n", "bogus": 1, "output_dest": "s3://b", "tags": ["a"]})
    assert out == {"name": "n", "tags": ["a"], "output": {"destination": "s3://b"}}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": 1}, "'name' must be a string, got int"),
        ({"execution": []}, "'execution' must be an object, got list"),
        ({"hyperparams": {"Args": []}}, "'hyperparams.Args' must be an object"),
        ({"configuration": {"c": "x"}}, "'configuration.c' must be an object"),
        ({"models": {"output": [{"name": "m"}]}}, "needs a string 'model'"),
        ({"output_dest": 3}, "'output_dest' must be a string"),
    ],
)
def test_check_fields_names_the_bad_field(body: dict[str, Any], words: str) -> None:
    with pytest.raises(ApiError) as info:
        check_fields(body)
    assert words in info.value.msg
    assert info.value.code == 400


def test_apply_edit_merges_some_fields_and_replaces_others() -> None:
    doc = {
        "script": {"repository": "r", "branch": "b"},
        "hyperparams": {"Args": {"a": {}}},
        "models": {"input": [{"name": "m", "model": "1"}], "output": []},
    }
    edited = apply_edit(
        doc,
        {
            "script": {"branch": "c"},
            "hyperparams": {"General": {}},
            "models": {"output": [{"name": "o", "model": "2"}]},
        },
    )
    assert edited["script"] == {"repository": "r", "branch": "c"}
    assert edited["hyperparams"] == {"General": {}}
    assert edited["models"]["input"] == [{"name": "m", "model": "1"}]
    assert doc["script"]["branch"] == "b"  # the input is untouched


def test_project_fields_with_dotted_paths() -> None:
    doc = {"id": "t", "status": "queued", "script": {"repository": "r", "branch": "b"}}
    assert project_fields(doc, ["status", "script.branch", "missing.x"]) == {
        "id": "t",
        "status": "queued",
        "script": {"branch": "b"},
    }
    assert project_fields(doc, None) == doc


def test_projection_keeps_the_parent_of_a_missing_leaf() -> None:
    """Dataset.create reads ``task.runtime.get("version")`` after asking for runtime.version."""
    doc = {"id": "t", "runtime": {}, "script": {"a": {"b": 1}}, "name": "n"}
    assert project_fields(doc, ["runtime.version"]) == {"id": "t", "runtime": {}}
    assert project_fields(doc, ["script.a.c", "script.a.b"]) == {
        "id": "t",
        "script": {"a": {"b": 1}},
    }
    assert project_fields(doc, ["name.x"]) == {"id": "t"}  # a string has no fields
    assert project_fields(doc, ["script.a.b", "script"]) == {"id": "t", "script": {"a": {"b": 1}}}


def test_tags_match() -> None:
    assert tags_match(["a", "b"], [])
    assert tags_match(["a"], ["a", "z"])
    assert not tags_match(["b"], ["a"])
    assert not tags_match(["a", "hidden"], ["-hidden"])
    assert tags_match(["a"], ["-hidden"])


def test_deep_merge() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {
        "a": {"b": 1, "c": 3},
        "d": 4,
    }
