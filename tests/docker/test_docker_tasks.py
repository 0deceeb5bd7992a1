"""Docker mode end to end: a real `conveyor daemon --docker`, a real engine, the offline base
image (never pulled), the real embedded server."""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from tests.docker.conftest import BASE_IMAGE, docker_agent_env, stop_agent, task_containers
from tests.helpers import api_call
from tests.integration.daemon.support import (
    CONVEYOR,
    agent_env,
    console_text,
    create_task,
    start_agent,
    wait_final,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IN_CONTAINER = textwrap.dedent(
    """
    import os, sys
    import six
    print("in container:", os.path.exists("/.dockerenv"))
    print("python:", sys.executable)
    print("six", six.__version__)
    print("to stderr", file=sys.stderr)
    """
)


def log_events(server: EmbeddedServer, task_id: str) -> list[dict[str, Any]]:
    data = api_call(
        server,
        "events.get_task_log",
        {"task": task_id, "batch_size": 10000, "navigate_earlier": True, "order": "asc"},
    )
    return list(data["events"])


def literal(text: str, name: str = "main.py", **script: Any) -> dict[str, Any]:
    return {"diff": text, "entry_point": name, **script}


def test_task_in_the_base_image_with_requirements_from_the_mounted_uv(
    embedded_server: EmbeddedServer, docker_agent_factory: Any, docker_client: Any
) -> None:
    docker_agent_factory(embedded_server)
    script = literal(IN_CONTAINER, requirements={"pip": "six==1.16.0"})
    first = create_task(embedded_server, "first", script, queue="dq")
    second = create_task(embedded_server, "warm", script, queue="dq")
    for task_id in (first, second):
        doc = wait_final(embedded_server, task_id)
        text = console_text(embedded_server, task_id)
        assert doc["status"] == "completed", (doc.get("status_reason"), text)
        assert "in container: True" in text
        assert f"python: {Path('/')}" in text and "/venv/bin/python" in text
        assert "six 1.16.0" in text
        assert f"from {BASE_IMAGE}" in text
        # Removed after the report: it may take a moment more.
        wait_for(lambda t=task_id: not task_containers(docker_client, t), 30, "removal")
    assert "(cache hit)" in console_text(embedded_server, second)  # uv's cache was mounted
    stderr = [e for e in log_events(embedded_server, first) if "to stderr" in e["msg"]]
    assert stderr and all(e["level"] == "error" for e in stderr)
    frozen = api_call(embedded_server, "tasks.get_by_id", {"task": first})["task"]["script"]
    assert "six==1.16.0" in frozen["requirements"]["pip"]


def test_run_as_is_uses_the_images_python_and_setup_script_runs_first(
    embedded_server: EmbeddedServer, docker_agent_factory: Any
) -> None:
    docker_agent_factory(embedded_server)
    check = "import sys; print('python:', sys.executable); print(open('/etc/marker').read())\n"
    as_is = create_task(
        embedded_server,
        "as-is",
        literal(check),
        queue="dq",
        container={
            "arguments": "--run-as-is",
            "setup_shell_script": "echo preparing the image\necho set-up-ran > /etc/marker\n",
        },
    )
    doc = wait_final(embedded_server, as_is)
    text = console_text(embedded_server, as_is)
    assert doc["status"] == "completed", (doc.get("status_reason"), text)
    assert "python: /usr/bin/python3" in text
    assert "set-up-ran" in text
    assert "setup: preparing the image" in text
    assert "as it is" in text


def test_refused_arguments_and_missing_images_fail_with_reasons(
    embedded_server: EmbeddedServer, docker_agent_factory: Any, docker_client: Any
) -> None:
    docker_agent_factory(embedded_server)
    cases = {
        "--privileged": ("'--privileged' refused", {"arguments": "--privileged"}),
        "pid": ("'--pid=host' refused", {"arguments": "--ipc=host --pid=host"}),
        "volume": ("outside docker_volume_roots", {"arguments": "-v /etc:/x"}),
        "image": (
            "image conveyor-no-such-image:1 not found locally and could not be pulled",
            {"image": "conveyor-no-such-image:1"},
        ),
    }
    ids = {
        name: create_task(embedded_server, name, literal("print(1)\n"), queue="dq", container=c)
        for name, (_, c) in cases.items()
    }
    for name, (reason, _) in cases.items():
        doc = wait_final(embedded_server, ids[name])
        assert doc["status"] == "failed", name
        assert reason in doc["status_reason"], (name, doc["status_reason"])
        assert not task_containers(docker_client, ids[name])


OOM = "data = b'x' * (500 * 1024 * 1024)\nprint('survived', len(data))\n"


def test_out_of_memory_is_the_failure_reason(
    embedded_server: EmbeddedServer, docker_agent_factory: Any
) -> None:
    docker_agent_factory(embedded_server)
    task_id = create_task(
        embedded_server, "oom", literal(OOM), queue="dq",
        container={"arguments": "--memory 64m --memory-swap 64m"},
    )  # fmt: skip
    doc = wait_final(embedded_server, task_id)
    assert doc["status"] == "failed"
    assert doc["status_reason"] == "out of memory (limit 64m)"
    assert "survived" not in console_text(embedded_server, task_id)


LONG = "import time\nprint('long task started', flush=True)\ntime.sleep(600)\n"


def test_abort_stops_the_container_and_removes_it(
    embedded_server: EmbeddedServer, docker_agent_factory: Any, docker_client: Any
) -> None:
    docker_agent_factory(embedded_server)
    task_id = create_task(embedded_server, "long", literal(LONG), queue="dq")
    wait_for(
        lambda: "long task started" in console_text(embedded_server, task_id),
        120,
        "the task to start in its container",
    )
    assert [c.status for c in task_containers(docker_client, task_id)] == ["running"]
    api_call(embedded_server, "tasks.stop", {"task": task_id})
    doc = wait_final(embedded_server, task_id, timeout=60)
    assert doc["status"] == "stopped"
    assert "aborted" in doc["status_reason"]
    wait_for(lambda: not task_containers(docker_client, task_id), 30, "the container to go")


def test_a_killed_agents_container_is_removed_when_it_restarts(
    embedded_server: EmbeddedServer, docker_agent_factory: Any, docker_client: Any
) -> None:
    agent = docker_agent_factory(embedded_server)
    task_id = create_task(embedded_server, "orphan", literal(LONG), queue="dq")
    wait_for(
        lambda: "long task started" in console_text(embedded_server, task_id),
        120,
        "the task to start in its container",
    )
    agent.signal(signal.SIGKILL)
    agent.wait(30)
    assert [c.status for c in task_containers(docker_client, task_id)] == ["running"]
    docker_agent_factory(embedded_server, restart=True)  # the same worker id
    wait_for(lambda: not task_containers(docker_client, task_id), 30, "the orphan to be removed")


def test_cli_flag_names_the_default_image(
    embedded_server: EmbeddedServer, docker_client: Any, tmp_path: Path, docker_cache: Path
) -> None:
    env = docker_agent_env()
    del env["CONVEYOR_DOCKER"], env["CONVEYOR_DOCKER_IMAGE"]  # only the flag says it
    agent = start_agent(
        embedded_server, tmp_path / "agent", docker_cache, "cli", "--docker", BASE_IMAGE, env=env
    )
    try:
        where = "import os\nprint('in container:', os.path.exists('/.dockerenv'))\n"
        task_id = create_task(embedded_server, "cli", literal(where), queue="cli")
        doc = wait_final(embedded_server, task_id)
        text = console_text(embedded_server, task_id)
        assert doc["status"] == "completed", (doc.get("status_reason"), text)
        assert "in container: True" in text
        assert f"from {BASE_IMAGE}" in text
    finally:
        stop_agent(agent)


def test_abort_during_setup_and_the_task_timeout_end_their_containers(
    embedded_server: EmbeddedServer, docker_agent_factory: Any, docker_client: Any
) -> None:
    docker_agent_factory(embedded_server, CONVEYOR_TASK_TIMEOUT="3")
    stuck = create_task(
        embedded_server, "stuck-setup", literal("print(1)\n"), queue="dq",
        container={"setup_shell_script": "echo setting up\nsleep 600\n"},
    )  # fmt: skip
    wait_for(lambda: "setup: setting up" in console_text(embedded_server, stuck), 60, "the setup")
    api_call(embedded_server, "tasks.stop", {"task": stuck})
    doc = wait_final(embedded_server, stuck, timeout=60)
    assert doc["status"] == "stopped", doc.get("status_reason")
    wait_for(lambda: not task_containers(docker_client, stuck), 30, "the container to go")

    slow = create_task(embedded_server, "slow", literal(LONG), queue="dq")
    doc = wait_final(embedded_server, slow, timeout=60)
    assert doc["status"] == "failed"
    assert doc["status_reason"] == "timed out after 3 s"
    assert "long task started" in console_text(embedded_server, slow)
    wait_for(lambda: not task_containers(docker_client, slow), 30, "the container to go")


def test_execute_runs_one_task_in_a_container(
    embedded_server: EmbeddedServer, docker_client: Any, tmp_path: Path, docker_cache: Path
) -> None:
    where = "import os\nprint('in container:', os.path.exists('/.dockerenv'))\n"
    task_id = api_call(
        embedded_server, "tasks.create",
        {"name": "fg", "type": "training", "script": literal(where)},
    )["id"]  # fmt: skip
    env = {**agent_env(embedded_server, tmp_path / "fg", docker_cache, "fg"), **docker_agent_env()}
    del env["CONVEYOR_DOCKER"], env["CONVEYOR_DOCKER_IMAGE"]
    done = subprocess.run(
        [str(CONVEYOR), "execute", "--id", task_id, "--docker", BASE_IMAGE],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"task {task_id}: completed" in done.stdout
    assert "in container: True" in console_text(embedded_server, task_id)
    assert not task_containers(docker_client, task_id)  # removed before execute returns


FLOOD = textwrap.dedent(
    """
    import sys
    for i in range(20000):
        print(f"out {i}")
        if i % 4 == 0:
            print(f"err {i}", file=sys.stderr)
    print("no newline at the end", end="")
    """
)


def test_container_output_arrives_whole_and_in_order(
    embedded_server: EmbeddedServer, docker_agent_factory: Any
) -> None:
    docker_agent_factory(embedded_server)
    task_id = create_task(
        embedded_server, "flood", literal(FLOOD), queue="dq", container={"arguments": "--run-as-is"}
    )
    assert wait_final(embedded_server, task_id)["status"] == "completed"
    events = log_events(embedded_server, task_id)
    lines: dict[str, list[str]] = {"info": [], "error": []}
    for event in events:
        lines[event["level"]].extend(event["msg"].splitlines())
    out = [line for line in lines["info"] if line.startswith("out ")]
    err = [line for line in lines["error"] if line.startswith("err ")]
    assert out == [f"out {i}" for i in range(20000)]
    assert err == [f"err {i}" for i in range(0, 20000, 4)]
    assert "no newline at the end" in lines["info"]
