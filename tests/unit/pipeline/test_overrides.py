"""Pure planning of overrides: Args → argv, Environment → env, configuration → files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.api.models import TaskSpec
from agent.pipeline.console import ListConsole
from agent.pipeline.overrides import (
    apply_overrides,
    config_file_name,
    expand_references,
    plan_overrides,
    requires_sdk,
    uses_sdk,
)


def _param(name: str, value: str, type_: str = "", description: str = "") -> dict[str, str]:
    return {"name": name, "value": value, "type": type_, "description": description}


def _task(
    args: list[dict[str, str]] | None = None,
    env: dict[str, str] | None = None,
    configuration: dict[str, tuple[str, str]] | None = None,
    requirements: str = "",
    diff: str = "",
    **sections: dict[str, Any],
) -> TaskSpec:
    hyperparams: dict[str, Any] = {**sections}
    if args is not None:
        hyperparams["Args"] = {p["name"]: {**p, "section": "Args"} for p in args}
    if env is not None:
        hyperparams["Environment"] = {k: {"name": k, "value": v} for k, v in env.items()}
    config = {
        name: {"name": name, "type": kind, "value": value}
        for name, (kind, value) in (configuration or {}).items()
    }
    doc = {
        "id": "t1",
        "script": {
            "repository": "" if diff else "https://h/r.git",
            "entry_point": "train.py",
            "diff": diff,
            "requirements": {"pip": requirements},
        },
        "hyperparams": hyperparams,
        "configuration": config,
    }
    return TaskSpec.parse(doc)


# --- Args, argparse style --------------------------------------------------------------------


def test_argparse_style_passes_each_value_as_an_option() -> None:
    task = _task([_param("lr", "0.7", "float"), _param("batch_size", "64", "int")])
    o = plan_overrides(task, [], sdk=False)
    assert o.argv == ("--lr", "0.7", "--batch_size", "64")
    assert o.summary[0] == "overrides: lr=0.7, batch_size=64"
    assert not o.sdk


def test_names_recorded_with_dashes_and_one_letter_names() -> None:
    # Task.create(argparse_args=[("--lr", "0.1")]) records the name as given.
    task = _task([_param("--lr", "0.1"), _param("-k", "3"), _param("v", "2")])
    assert plan_overrides(task, [], sdk=False).argv == ("--lr", "0.1", "-k", "3", "-v", "2")


def test_args_as_task_create_records_them() -> None:
    # What clearml 2.1.12 stores for Task.create(argparse_args=[("--lr", "0.1"),
    # ("batch_size", "4"), ("verbose", "true")]): names as given, every type "str".
    task = _task(
        [
            _param("--lr", "0.1", "str"),
            _param("batch_size", "4", "str"),
            _param("verbose", "true", "str"),
        ]
    )
    o = plan_overrides(task, ["--batch-size", "2", "data.csv"], sdk=False)
    assert o.argv == ("--batch-size", "4", "data.csv", "--lr", "0.1", "--verbose")
    assert o.summary[0] == "overrides: lr=0.1, batch_size=4 (was 2), verbose=true"


def test_args_as_the_sdks_argparse_binding_records_them() -> None:
    # The SDK's argparse binding: dest names, argparse or value types, "default: x" when the
    # option's help is "", "None" otherwise, lists as Python reprs, store_true as bool.
    task = _task(
        [
            _param("batch_size", "8", "int", "None"),
            _param("lr", "0.1", "float", "default: 0.01"),
            _param("layers", "[1, 2, 3]", "int", "None"),
            _param("verbose", "False", "bool", "None"),
        ]
    )
    o = plan_overrides(task, [], sdk=False)
    assert o.argv == ("--batch_size", "8", "--lr", "0.1", "--layers", "1", "2", "3")
    assert (
        o.summary[0]
        == "overrides: batch_size=8, lr=0.1 (was 0.01), layers=[1, 2, 3], verbose=False"
    )


def test_booleans_are_flags() -> None:
    task = _task(
        [
            _param("verbose", "True", "bool"),
            _param("quiet", "false"),
            _param("fast", "1", "bool"),
            _param("mode", "true", "str"),  # untyped-looking words count as booleans too
        ]
    )
    assert plan_overrides(task, [], sdk=False).argv == ("--verbose", "--fast", "--mode")


def test_a_false_flag_removes_the_entry_points_flag() -> None:
    task = _task([_param("verbose", "False", "bool")])
    o = plan_overrides(task, ["--verbose", "data.csv"], sdk=False)
    assert o.argv == ("data.csv",)
    assert "verbose=False (was true)" in o.summary[0]


def test_a_flag_written_with_a_value_keeps_that_form() -> None:
    task = _task([_param("amp", "True", "bool")])
    assert plan_overrides(task, ["--amp", "false", "x"], sdk=False).argv == ("--amp", "True", "x")
    assert plan_overrides(task, ["--amp=false"], sdk=False).argv == ("--amp=True",)


def test_lists_become_several_values() -> None:
    task = _task([_param("layers", "[64, 128]", "int"), _param("names", "['a b', 'c']")])
    o = plan_overrides(task, [], sdk=False)
    assert o.argv == ("--layers", "64", "128", "--names", "a b", "c")


def test_an_empty_list_and_an_unparsable_one() -> None:
    task = _task([_param("layers", "[]"), _param("pattern", "[a-z]+]")])
    assert plan_overrides(task, [], sdk=False).argv == ("--pattern", "[a-z]+]")


def test_entry_point_arguments_are_overridden_in_place_not_duplicated() -> None:
    task = _task([_param("lr", "0.7", "float"), _param("batch_size", "64", "int")])
    entry = ["data.csv", "--lr", "0.01", "--batch-size=32", "--epochs", "3", "out"]
    o = plan_overrides(task, entry, sdk=False)
    assert o.argv == ("data.csv", "--lr", "0.7", "--batch-size=64", "--epochs", "3", "out")
    assert o.summary[0] == "overrides: lr=0.7 (was 0.01), batch_size=64 (was 32)"


def test_a_repeated_entry_option_is_replaced_once() -> None:
    task = _task([_param("lr", "0.7")])
    assert plan_overrides(task, ["--lr", "1", "--lr", "2"], sdk=False).argv == ("--lr", "0.7")


def test_positional_arguments_are_preserved_around_lists_and_after_double_dash() -> None:
    task = _task([_param("layers", "[1, 2]"), _param("lr", "0.5")])
    entry = ["fit", "--layers", "8", "--other", "x", "--", "--lr", "9"]
    o = plan_overrides(task, entry, sdk=False)
    assert o.argv == ("fit", "--layers", "1", "2", "--other", "x", "--lr", "0.5", "--", "--lr", "9")


def test_negative_numbers_are_values_not_options() -> None:
    task = _task([_param("shift", "-0.5", "float"), _param("k", "-2", "int")])
    o = plan_overrides(task, ["--shift", "-1"], sdk=False)
    assert o.argv == ("--shift=-0.5", "-k", "-2")
    assert "shift=-0.5 (was -1)" in o.summary[0]


def test_was_from_the_sdks_default_description() -> None:
    task = _task([_param("lr", "0.7", "float", "default: 0.01"), _param("wd", "1", "", "None")])
    assert plan_overrides(task, [], sdk=False).summary[0] == "overrides: lr=0.7 (was 0.01), wd=1"


def test_empty_values_are_not_passed_and_bad_names_are_refused() -> None:
    task = _task([_param("lr", ""), _param("bad name", "1"), _param("/subparser1", "x")])
    o = plan_overrides(task, ["--lr", "0.1"], sdk=False)
    assert o.argv == ("--lr", "0.1")
    assert o.summary == ("overrides: empty, not passed: lr",)
    assert len(o.refused) == 2 and "'bad name'" in o.refused[0]


# --- Args, hydra style -----------------------------------------------------------------------


def test_hydra_style() -> None:
    task = _task(
        [
            _param("trainer.max_epochs", "10", "int"),
            _param("model.dropout", "0.1"),
            _param("debug", "True", "bool"),
            _param("+extra", "x"),
            _param("layers", "[1, 2]"),
            _param("--multirun", "true"),
        ]
    )
    entry = ["trainer.max_epochs=3", "db=mysql", "++model.dropout=0.5"]
    o = plan_overrides(task, entry, style="hydra", sdk=False)
    assert o.argv == (
        "trainer.max_epochs=10",
        "db=mysql",
        "++model.dropout=0.1",
        "debug=true",
        "+extra=x",
        "layers=[1, 2]",
        "--multirun",
    )
    assert "trainer.max_epochs=10 (was 3)" in o.summary[0]


def test_unknown_style_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown argument style"):
        plan_overrides(_task([]), [], style="fire", sdk=False)


# --- SDK detection -----------------------------------------------------------------------------


def test_sdk_scripts_get_no_arguments_twice() -> None:
    task = _task([_param("lr", "0.7")], requirements="numpy==1.26\nclearml==2.1.12\n")
    o = plan_overrides(task, ["--lr", "0.1"])
    assert o.sdk
    assert o.argv == ("--lr", "0.1")
    assert o.summary == ("overrides: lr=0.7 (Args applied by the clearml SDK)",)


@pytest.mark.parametrize(
    ("requirements", "expected"),
    [
        ("clearml", True),
        ("ClearML[s3] >= 1.16", True),
        ("clearml @ git+https://github.com/allegroai/clearml.git", True),
        ("  clearml==2.1.12  # pinned", True),
        ("clearml-agent==1.9\nclearml_serving", False),
        ("# clearml\nnumpy", False),
        ("", False),
    ],
)
def test_sdk_in_requirements(requirements: str, expected: bool) -> None:
    assert requires_sdk(requirements) is expected


def test_sdk_import_in_a_literal_script_or_given_source() -> None:
    script = "import os\nfrom clearml import Task\nTask.init()\n"
    assert uses_sdk(_task([], diff=script))
    assert not uses_sdk(_task([], diff="import os\n# import clearml\nprint(1)\n"))
    assert uses_sdk(_task([]), script_text="import clearml\n")
    assert not uses_sdk(_task([]), script_text="import clearmlish\n")
    assert not uses_sdk(_task([]))


def test_sections_only_the_sdk_reads_are_mentioned() -> None:
    task = _task([], General={"x": {"name": "x", "value": "1"}})
    assert any("General" in line for line in plan_overrides(task, [], sdk=False).summary)


# --- Environment ---------------------------------------------------------------------------------


def test_environment_names_are_validated() -> None:
    env = {
        "MY_VAR": "1",
        "_ok2": "x y",
        "2BAD": "1",
        "BAD-NAME": "1",
        "CLEARML_TASK_ID": "evil",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HTTP_PROXY": "http://p",
        "NUL": "a\0b",
    }
    o = plan_overrides(_task(env=env), [], sdk=False, reserved_env={"HTTP_PROXY"})
    assert o.env == {"MY_VAR": "1", "_ok2": "x y"}
    refused = "\n".join(o.refused)
    for name in (
        "2BAD",
        "BAD-NAME",
        "CLEARML_TASK_ID",
        "CUDA_VISIBLE_DEVICES",
        "HTTP_PROXY",
        "NUL",
    ):
        assert f"'{name}'" in refused
    assert "overrides: environment MY_VAR, _ok2" in o.summary


def test_environment_is_exported_for_sdk_scripts_too() -> None:
    o = plan_overrides(_task(env={"A": "1"}), [], sdk=True)
    assert o.env == {"A": "1"}


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("train", "yaml", ("train.yaml", "CONVEYOR_CONFIG_TRAIN")),
        ("train.yaml", "yaml", ("train.yaml", "CONVEYOR_CONFIG_TRAIN")),
        ("General", "dictionary", ("General.conf", "CONVEYOR_CONFIG_GENERAL")),
        ("data spec", "json", ("data_spec.json", "CONVEYOR_CONFIG_DATA_SPEC")),
        ("../../etc/passwd", "", ("etc_passwd.txt", "CONVEYOR_CONFIG_ETC_PASSWD")),
        ("notes", "text", ("notes.txt", "CONVEYOR_CONFIG_NOTES")),
        ("model-cfg", "yml", ("model-cfg.yml", "CONVEYOR_CONFIG_MODEL_CFG")),
        ("x", "some/weird type", ("x.txt", "CONVEYOR_CONFIG_X")),
        ("...", "toml", ("config.toml", "CONVEYOR_CONFIG_CONFIG")),
    ],
)
def test_config_file_naming(name: str, kind: str, expected: tuple[str, str]) -> None:
    assert config_file_name(name, kind) == expected


def test_configuration_files_and_colliding_names() -> None:
    config = {"train": ("yaml", "lr: 0.1\n"), "Train": ("yaml", "lr: 0.2\n"), "a.b": ("json", "{}")}
    o = plan_overrides(_task(configuration=config), [], sdk=False)
    assert o.files == {
        "config/train.yaml": "lr: 0.1\n",
        "config/Train_2.yaml": "lr: 0.2\n",
        "config/a.b.json": "{}",
    }
    assert o.env_for_files == {
        "CONVEYOR_CONFIG_TRAIN": "config/train.yaml",
        "CONVEYOR_CONFIG_TRAIN_2": "config/Train_2.yaml",
        "CONVEYOR_CONFIG_A_B": "config/a.b.json",
    }
    assert "overrides: configuration → config/train.yaml (${CONVEYOR_CONFIG_TRAIN})" in o.summary


def test_apply_writes_files_and_returns_the_environment(tmp_path: Path) -> None:
    config = {"train": ("yaml", "lr: 0.1\r\nbatch: 4\n")}
    o = plan_overrides(_task(env={"A": "1"}, configuration=config), [], sdk=False)
    env = apply_overrides(o, tmp_path)
    path = tmp_path / "config" / "train.yaml"
    assert env == {"A": "1", "CONVEYOR_CONFIG_TRAIN": str(path)}
    assert path.read_bytes() == b"lr: 0.1\r\nbatch: 4\n"


def test_references_to_files_are_expanded_in_arguments() -> None:
    env = {"CONVEYOR_CONFIG_TRAIN": "/w/config/train.yaml"}
    argv = ["--config", "${CONVEYOR_CONFIG_TRAIN}", "--x=${CONVEYOR_CONFIG_NOPE}", "$HOME"]
    assert expand_references(argv, env) == (
        "--config",
        "/w/config/train.yaml",
        "--x=${CONVEYOR_CONFIG_NOPE}",
        "$HOME",
    )


def test_report_prints_summary_and_refusals() -> None:
    o = plan_overrides(_task([_param("lr", "1")], env={"1X": "a"}), [], sdk=False)
    console = ListConsole()
    o.report(console)
    assert console.lines[0] == ("info", "overrides: lr=1")
    assert console.lines[-1][0] == "error" and "'1X'" in console.lines[-1][1]
