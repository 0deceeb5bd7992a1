"""Services mode's pure parts: worker ids, the next free index, settings and flag parsing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.config.errors import SettingsError
from agent.config.settings import load_settings
from agent.worker.services import DEFAULT_SERVICES_CAP, next_index, service_worker_id


def test_worker_ids_are_the_agent_then_numbered() -> None:
    assert service_worker_id("box:conveyor", 0) == "box:conveyor"
    assert service_worker_id("box:conveyor", 3) == "box:conveyor:3"


@pytest.mark.parametrize(
    ("used", "cap", "expected"),
    [(set(), 2, 0), ({0}, 2, 1), ({0, 1}, 2, None), ({1}, 3, 0), ({0, 2}, 3, 1)],
)
def test_next_index_is_the_lowest_free_below_the_cap(
    used: set[int], cap: int, expected: int | None
) -> None:
    assert next_index(used, cap) == expected


def test_services_mode_setting_and_its_refusal() -> None:
    assert load_settings(environ={"CONVEYOR_SERVICES_MODE": "5"}).services_mode == 5
    with pytest.raises(SettingsError, match="services_mode"):
        load_settings(environ={"CONVEYOR_SERVICES_MODE": "-1"})


def test_log_level_refuses_an_unknown_level() -> None:
    assert load_settings(environ={"CONVEYOR_LOG_LEVEL": "WARN"}).log_level == "WARN"
    with pytest.raises(SettingsError, match="log_level"):
        load_settings(environ={"CONVEYOR_LOG_LEVEL": "loud"})


def test_services_mode_flag_takes_an_optional_cap() -> None:
    daemon = main.commands["daemon"]
    ctx = daemon.make_context("daemon", ["--services-mode"])
    assert ctx.params["services_mode"] == DEFAULT_SERVICES_CAP
    ctx = daemon.make_context("daemon", ["--services-mode", "3", "--queue", "services"])
    assert ctx.params["services_mode"] == 3
    assert ctx.params["queues"] == ("services",)
    assert CliRunner().invoke(main, ["daemon", "--services-mode", "x"]).exit_code == 2
