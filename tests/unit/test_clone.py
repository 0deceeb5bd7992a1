"""`conveyor clone`'s pure parts: --set parsing and which input model is replaced."""

from __future__ import annotations

import pytest

from agent.cli.clone import CloneUsageError, is_url, model_slot, parse_sets


def test_sets_parse_section_name_value() -> None:
    assert parse_sets(["Args/lr=0.7", "General/tag=a=b", "Args/empty="]) == {
        "Args/lr": "0.7",
        "General/tag": "a=b",
        "Args/empty": "",
    }


@pytest.mark.parametrize("bad", ["lr=0.7", "Args/lr", "/lr=1", "Args/=1"])
def test_sets_without_a_section_or_value_are_refused(bad: str) -> None:
    with pytest.raises(CloneUsageError, match="SECTION/NAME=VALUE"):
        parse_sets([bad])


def test_model_slot() -> None:
    assert model_slot(["base"], "") == "base"
    assert model_slot([], "") == "Input Model"
    assert model_slot(["a", "b"], "b") == "b"
    with pytest.raises(CloneUsageError, match="--model-name"):
        model_slot(["a", "b"], "")


def test_is_url() -> None:
    assert is_url("file:///tmp/w.bin") and is_url("http://h/files/x")
    assert not is_url("0123abcd")
