"""The unit files in systemd/: the keys the agent relies on, checked against the code."""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from agent.cli import main
from agent.config.settings import ENV_PREFIX, Settings

UNITS = Path(__file__).resolve().parents[2] / "systemd"
AGENT = "conveyor-agent.service"
TEMPLATE = "conveyor-agent@.service"
SERVER = "conveyor-server.service"
INSTALLED_BINARY = "/opt/conveyor/bin/conveyor"
# Time to report "stopped" and unregister after the drain and the kill grace.
STOP_MARGIN = 30.0
Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """systemd's syntax: [Section], Key=Value, keys may repeat, '#'/';' comments."""
    unit: Unit = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"not a unit file line: {raw!r}"
        unit[section].setdefault(key.strip(), []).append(value.strip())
    return unit


def load(name: str) -> Unit:
    return parse_unit((UNITS / name).read_text(encoding="utf-8"))


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"{key}= should be set once, got {values}"
    return values[0]


def environment(unit: Unit) -> dict[str, str]:
    """Environment= lines (each may hold several quoted assignments) as one dict."""
    lines = unit["Service"].get("Environment", [])
    return dict(a.split("=", 1) for line in lines for a in shlex.split(line))


def seconds(value: str) -> float:
    """The unit-file time spans used here: plain seconds or '<n>min'/'<n>s'."""
    match = re.fullmatch(r"(\d+)\s*(min|s)?", value)
    assert match, f"unsupported time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


def command_of(exec_start: str) -> click.Command:
    argv = shlex.split(exec_start)
    assert argv[0] == INSTALLED_BINARY
    command = main.commands.get(argv[1])
    assert command is not None, f"no such command: conveyor {argv[1]}"
    options = {opt for p in command.params for opt in p.opts}
    flags = [a for a in argv[2:] if a.startswith("--")]
    assert set(flags) <= options, f"unknown flags {set(flags) - options} for {argv[1]}"
    return command


@pytest.mark.parametrize("name", [AGENT, TEMPLATE])
def test_agent_units_lifecycle(name: str) -> None:
    unit = load(name)
    assert one(unit, "Type") == "notify"
    assert seconds(one(unit, "WatchdogSec")) >= 30
    assert one(unit, "Restart") == "on-failure"
    assert "2" in one(unit, "RestartPreventExitStatus").split()  # usage errors do not loop
    assert one(unit, "KillMode") == "mixed"
    assert one(unit, "OOMPolicy") == "continue"  # a task's OOM kill must not stop the agent
    defaults = Settings()
    assert seconds(one(unit, "TimeoutStopSec")) >= (
        defaults.drain_timeout + defaults.abort_grace + STOP_MARGIN
    )
    assert command_of(one(unit, "ExecStart")).name == "daemon"
    assert one(unit, "WantedBy", "Install") == "multi-user.target"


@pytest.mark.parametrize("name", [AGENT, TEMPLATE, SERVER])
def test_units_run_as_conveyor_with_their_own_dirs(name: str) -> None:
    unit = load(name)
    assert one(unit, "User") == "conveyor"
    env = environment(unit)
    state = one(unit, "StateDirectory").split()
    assert env["CONVEYOR_DATA_DIR"] in [f"%S/{d}" for d in state]
    assert env["CONVEYOR_LOG_FORMAT"] == "json"
    if name != SERVER:
        assert env["CONVEYOR_CACHE_DIR"] == f"%C/{one(unit, 'CacheDirectory')}"
        assert "-/etc/conveyor/agent.env" in unit["Service"]["EnvironmentFile"]


@pytest.mark.parametrize("name", [AGENT, TEMPLATE, SERVER])
def test_environment_names_real_settings(name: str) -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    for var in environment(load(name)):
        assert var == "CONVEYOR_CONFIG" or var.removeprefix(ENV_PREFIX).lower() in fields, var


def test_template_instance_is_one_gpu_and_one_worker() -> None:
    unit = load(TEMPLATE)
    argv = shlex.split(one(unit, "ExecStart"))
    assert argv[argv.index("--gpus") + 1] == "%i"
    env = environment(unit)
    assert env["CONVEYOR_WORKER_ID"] == "%H:gpu%i"
    assert "%i" in env["CONVEYOR_DATA_DIR"]  # spools and work dirs are per instance
    assert "%i" not in env["CONVEYOR_CACHE_DIR"]  # caches are shared (locked, atomic)
    assert "-/etc/conveyor/agent@%i.env" in unit["Service"]["EnvironmentFile"]


@pytest.mark.parametrize("name", [AGENT, TEMPLATE])
def test_hardening_leaves_gpus_and_jits_alone(name: str) -> None:
    unit = load(name)
    service = unit["Service"]
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "PrivateTmp") == "yes"
    assert one(unit, "ProtectSystem") in ("full", "strict")
    # Each of these hides /dev/nvidia* (a device allow list) or breaks JIT compilers.
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert key not in service, f"{key}= would take the GPUs away from tasks"
    assert "MemoryDenyWriteExecute" not in service


def test_server_unit_runs_the_server_command_on_loopback() -> None:
    unit = load(SERVER)
    command = command_of(one(unit, "ExecStart"))
    assert command.name == "server"
    argv = shlex.split(one(unit, "ExecStart"))
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """systemd's own parser: unknown keys or bad values are warnings on stderr."""
    names = {AGENT: AGENT, TEMPLATE: "conveyor-agent@0.service", SERVER: SERVER}
    for source, target in names.items():
        text = (UNITS / source).read_text(encoding="utf-8")
        # verify checks that ExecStart is executable: point it at one that exists here.
        (tmp_path / target).write_text(text.replace(INSTALLED_BINARY, sys.executable))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / t) for t in names.values())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys: any output at all is a failure
    assert done.stdout + done.stderr == ""
    assert done.returncode == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("name", [AGENT, TEMPLATE, SERVER])
def test_security_exposure_is_at_most_5(name: str) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=50", str(UNITS / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, summary
