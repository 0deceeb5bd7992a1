from pathlib import Path

import pytest

from agent.config.errors import SettingsError
from agent.config.settings import load_settings


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[worker]\nslots = 2\nqueues = ["a", "b"]\n[polling]\nabort_grace = 3.5\n')
    env = {"CONVEYOR_SLOTS": "3", "CLEARML_API_HOST": "http://h:8008"}
    s = load_settings(config_path=cfg, environ=env, overrides={"slots": 4, "gpus": None})
    assert s.slots == 4
    assert s.queues == ("a", "b")
    assert s.abort_grace == 3.5
    assert s.api_host == "http://h:8008"
    assert s.gpus == "none"


def test_conveyor_env_beats_clearml_env() -> None:
    env = {"CLEARML_API_HOST": "http://a", "CONVEYOR_API_HOST": "http://b"}
    s = load_settings(environ={**env, "CONVEYOR_CONFIG": ""})
    assert s.api_host == "http://b"


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("slotz = 2\n")
    with pytest.raises(SettingsError, match="unknown setting 'slotz'"):
        load_settings(config_path=cfg, environ={})


def test_a_retired_setting_names_what_replaced_it(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[slurm]\nslurm_max_attempts = 3\n")
    with pytest.raises(SettingsError, match=r"'slurm_max_attempts'.*replaced by max_retries"):
        load_settings(config_path=cfg, environ={})
    with pytest.raises(SettingsError, match="CONVEYOR_SLURM_MAX_ATTEMPTS: replaced by"):
        load_settings(environ={"CONVEYOR_SLURM_MAX_ATTEMPTS": "3", "CONVEYOR_CONFIG": ""})


def test_bad_values_name_the_source() -> None:
    with pytest.raises(SettingsError, match="CONVEYOR_SLOTS"):
        load_settings(environ={"CONVEYOR_SLOTS": "many"})
    with pytest.raises(SettingsError, match="gpus"):
        load_settings(environ={"CONVEYOR_GPUS": "first"})
    with pytest.raises(SettingsError, match="poll_wait must be between 0 and 60 s, got 600"):
        load_settings(environ={"CONVEYOR_POLL_WAIT": "600"})
    assert load_settings(environ={"CONVEYOR_POLL_WAIT": "0"}).poll_wait == 0.0


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(config_path=tmp_path / "missing.toml", environ={})


def test_masked_hides_secrets() -> None:
    s = load_settings(environ={"CONVEYOR_SECRET_KEY": "s3cret", "CONVEYOR_EXTRA_ENV": "A=1,B=2"})
    shown = s.masked()
    assert shown["secret_key"] == "****"
    assert "s3cret" not in repr(shown)
    assert s.extra_env == {"A": "1", "B": "2"}


def test_retry_and_worker_timeout_settings() -> None:
    env = {"CONVEYOR_QUEUE_MAX_RETRIES": "spot=5, gpu=0", "CONVEYOR_WORKER_TIMEOUT": "120"}
    settings = load_settings(environ=env, config_path=None, overrides={"max_retries": 1})
    assert settings.queue_max_retries == {"spot": "5", "gpu": "0"}
    assert (settings.max_retries, settings.worker_timeout) == (1, 120.0)
    bad = [
        ({"CONVEYOR_MAX_RETRIES": "101"}, "max_retries must be between 0 and 100, got 101"),
        ({"CONVEYOR_QUEUE_MAX_RETRIES": "spot=x"}, r"queue_max_retries\['spot'\]"),
        ({"CONVEYOR_WORKER_TIMEOUT": "5"}, "worker_timeout must be above heartbeat_interval"),
    ]
    for environ, message in bad:
        with pytest.raises(SettingsError, match=message):
            load_settings(environ=environ)
