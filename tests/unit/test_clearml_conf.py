"""Reading the api section of real clearml.conf files (HOCON, as clearml-init writes them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from agent.config.clearml_conf import default_path, read_clearml_conf
from agent.config.errors import SettingsError

# What `clearml-init` writes: unquoted URLs (whose "//" is not a comment), a one-line
# credentials block of "quoted" JSON-style pairs, then an sdk block the agent ignores.
CLEARML_INIT_FILE = """\
# ClearML SDK configuration file
api {
    # Notice: 'host' is the api server (default port 8008), not the web server.
    api_server: https://api.clear.example:8008
    web_server: https://app.clear.example
    files_server: https://files.clear.example:8081
    # Credentials are generated using the webapp, https://app.clear.example/settings
    # Override with os environment: CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY
    credentials {"access_key": "AK0123456789", "secret_key": "s3cr/et+with=chars"}
}
sdk {
    storage {
        cache {
            default_base_dir: "~/.clearml/cache"
        }
    }
    development {
        default_output_uri: ""
        worker {
            report_period_sec: 2
        }
    }
    aws { s3 { key: "", secret: "", region: "" } }
}
"""


def write(tmp_path: Path, text: str, name: str = "clearml.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_what_clearml_init_writes(tmp_path: Path) -> None:
    assert read_clearml_conf(write(tmp_path, CLEARML_INIT_FILE)) == {
        "api_host": "https://api.clear.example:8008",
        "web_host": "https://app.clear.example",
        "files_host": "https://files.clear.example:8081",
        "access_key": "AK0123456789",
        "secret_key": "s3cr/et+with=chars",
    }


def test_reads_a_full_file_with_the_sdk_section_clearml_ships(tmp_path: Path) -> None:
    """The api block clearml-init writes, then the SDK's own default sdk.conf, as it does."""
    spec = importlib.util.find_spec("clearml")  # located, not imported (that takes seconds)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the clearml SDK is not installed")
    sdk_conf = Path(spec.submodule_search_locations[0]) / "config" / "default" / "sdk.conf"
    api_block = CLEARML_INIT_FILE[: CLEARML_INIT_FILE.index("sdk {")]
    text = api_block + "sdk " + sdk_conf.read_text(encoding="utf-8")
    found = read_clearml_conf(write(tmp_path, text))
    assert found["api_host"] == "https://api.clear.example:8008"
    assert found["secret_key"] == "s3cr/et+with=chars"


def test_dotted_keys_quoted_values_and_substitutions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_CONVEYOR_SECRET", "from-env")
    text = (
        'api.api_server = "http://10.0.0.5:8008"\n'
        "api.credentials.access_key = plain-key\n"
        "api.credentials.secret_key = ${TEST_CONVEYOR_SECRET}\n"
        "api.web_server = ${?TEST_CONVEYOR_UNSET}\n"  # optional substitution, unset: absent
    )
    assert read_clearml_conf(write(tmp_path, text)) == {
        "api_host": "http://10.0.0.5:8008",
        "access_key": "plain-key",
        "secret_key": "from-env",
    }


def test_only_present_non_empty_values(tmp_path: Path) -> None:
    text = 'api {\n  api_server: "http://h:8008"\n  files_server: ""\n  credentials: null\n}\n'
    assert read_clearml_conf(write(tmp_path, text)) == {"api_host": "http://h:8008"}


def test_legacy_host_key_is_a_fallback_for_api_server(tmp_path: Path) -> None:
    only_host = write(tmp_path, "api { host: http://old:8008 }\n", "old.conf")
    both = write(tmp_path, "api { host: http://old:8008, api_server: http://new:8008 }\n")
    assert read_clearml_conf(only_host) == {"api_host": "http://old:8008"}
    assert read_clearml_conf(both) == {"api_host": "http://new:8008"}


def test_no_api_section(tmp_path: Path) -> None:
    assert read_clearml_conf(write(tmp_path, "sdk { a: 1 }\n")) == {}
    assert read_clearml_conf(write(tmp_path, "", "empty.conf")) == {}


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_clearml_conf(tmp_path / "nope.conf") == {}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("api {\n  api_server: http://h:8008\n", "not valid HOCON"),  # unclosed block
        ("api { api_server: ${UNDEFINED_CONVEYOR_VAR} }\n", "not valid HOCON"),
        ("api = 5\n", "'api' is not a section"),
        ("api { api_server: [a, b] }\n", "'api.api_server' must be a single value"),
        ("api { credentials: yes-please }\n", "'api.credentials.access_key'"),
    ],
)
def test_bad_files_raise_settings_error_naming_the_file(
    tmp_path: Path, text: str, why: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError, match=why) as info:
        read_clearml_conf(path)
    assert str(path) in str(info.value)


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "clearml.conf"
    binary.write_bytes(b"api { api_server: \xff\xfe }")
    with pytest.raises(SettingsError, match="cannot read") as info:
        read_clearml_conf(binary)
    assert str(binary) in str(info.value)
    with pytest.raises(SettingsError, match="cannot read"):
        read_clearml_conf(tmp_path)  # a directory


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_path({"CLEARML_CONFIG_FILE": "/etc/clearml.conf"}) == Path("/etc/clearml.conf")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_path({}) == tmp_path / "clearml.conf"
    write(tmp_path, "api { api_server: http://home:8008 }\n")
    monkeypatch.delenv("CLEARML_CONFIG_FILE", raising=False)
    assert read_clearml_conf() == {"api_host": "http://home:8008"}
    other = write(tmp_path, "api { api_server: http://other:8008 }\n", "other.conf")
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(other))
    assert read_clearml_conf() == {"api_host": "http://other:8008"}
