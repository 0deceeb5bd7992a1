"""Injection attempts against the pure validators: every one refused, with a reason that names
the field; legitimate values still pass (a validator that refuses everything is no defence).

The attacks are the classic ones against agents that shell out to git and docker: option
injection (a value starting with ``-``), git's transport helpers (``ext::``), ssh options
smuggled in as a host name, paths that climb out of the checkout, shell metacharacters,
control characters, and container options that hand the host to the task.
"""

from __future__ import annotations

import pytest

from agent.api.models import TaskSpec
from agent.config.settings import Settings
from agent.errors import StageError
from agent.pipeline.docker_plan import ArgsPolicy, parse_container_args
from agent.pipeline.host import HostFacts, ServerAccess
from agent.pipeline.overrides import plan_overrides
from agent.pipeline.plan import make_plan, split_entry_point, task_env
from agent.pipeline.source_request import SourceRequest, validate_repository, validate_request

REPO = "https://git.example.com/org/repo.git"
SERVER = ServerAccess("http://127.0.0.1:9", "", "", "KEY", "SECRET")
HOST = HostFacts(hostname="box")

# --- repository ------------------------------------------------------------------------------
EVIL_REPOSITORIES = [
    "ext::sh -c touch% /tmp/pwned",  # git's ext transport runs a command
    "ext::sh",
    "fd::17",  # transport helper syntax
    "file::/tmp/x",
    "--upload-pack=touch /tmp/pwned",  # an option, not a URL
    "-u touch",
    "--config=core.sshCommand=touch",
    "ssh://-oProxyCommand=touch%20pwned/repo",  # ssh option as the host
    "ssh://git@-oProxyCommand=touch/repo",
    "ssh://[-oProxyCommand=touch]/repo",  # the bracketed (IPv6) host form
    "ssh://git@[-oProxyCommand=touch]:22/repo",
    "-oProxyCommand=touch:repo",  # scp-like with an option as the host
    "git@-oProxyCommand=touch:repo",
    "https://host/repo.git --upload-pack=touch",  # whitespace: a second argument
    "https://host/repo.git\n--upload-pack=touch",
    "https://host/repo\x00.git",
    "javascript://host/x",  # schemes git may not fetch
    "data://text/plain,x",
    "ftp://host/repo.git",
    "relative/path/repo",  # neither URL nor absolute path
    "./repo",
    "",
]


@pytest.mark.parametrize("url", [u for u in EVIL_REPOSITORIES if u])
def test_evil_repositories_are_refused(url: str) -> None:
    with pytest.raises(StageError) as refused:
        validate_repository(url)
    assert "repository" in refused.value.reason


@pytest.mark.parametrize(
    "url",
    [
        REPO,
        "http://127.0.0.1:8080/repo.git",
        "ssh://git@github.com:22/org/repo.git",
        "ssh://git@[::1]:22/org/repo.git",
        "git://host/repo.git",
        "git@github.com:org/repo.git",
        "file:///srv/git/repo.git",
        "/srv/git/repo.git",
        "https://user:token@host/repo.git",  # credentials are split off, not refused
    ],
)
def test_real_repositories_pass(url: str) -> None:
    validate_repository(url)


def test_refusals_never_echo_credentials() -> None:
    with pytest.raises(StageError) as refused:
        validate_repository("ftp://alice:s3cr3t-t0ken@host/repo.git")
    assert "s3cr3t-t0ken" not in refused.value.reason


# --- refs, commit, paths -------------------------------------------------------------------
EVIL_REFS = [
    "--upload-pack=touch /tmp/pwned",
    "-c",
    "--output=/tmp/pwned",
    "main --force",
    "main\n",
    "main\x00",
    "main\x7f",
    "main..evil",  # a range
    "@{-1}",
    "HEAD~1",
    "main^",
    "refs/heads/a:refs/heads/b",  # a refspec
    "ma?n",
    "ma*n",
    "ma[n",
    "ma\\n",
    "main.lock",
    "/etc/passwd",
    "main/",
]


@pytest.mark.parametrize("field", ["branch", "tag"])
@pytest.mark.parametrize("value", EVIL_REFS)
def test_evil_refs_are_refused(field: str, value: str) -> None:
    with pytest.raises(StageError) as refused:
        validate_request(SourceRequest(repository=REPO, **{field: value}))
    assert field in refused.value.reason


@pytest.mark.parametrize(
    "commit", ["--all", "HEAD", "deadbeef --x", "deadbeef;touch", "abc", "g" * 40, "-" + "a" * 39]
)
def test_evil_commits_are_refused(commit: str) -> None:
    with pytest.raises(StageError) as refused:
        validate_request(SourceRequest(repository=REPO, commit=commit))
    assert "commit" in refused.value.reason


@pytest.mark.parametrize(
    ("entry_point", "working_dir"),
    [
        ("../../etc/passwd", "."),
        ("/etc/passwd", "."),
        ("sub/../../x.py", "."),
        ("../x.py", "."),
        ("C:\\Windows\\x.py", "."),
        ("x\x00.py", "."),
        ("x\n.py", "."),
        ("x.py", ".."),
        ("x.py", "/"),
        ("x.py", "/etc"),
        ("x.py", "a/../../b"),
        ("x.py", "C:/x"),
        ("../../x.py", "sub"),  # relative to the working dir, still outside the repository
    ],
)
def test_paths_out_of_the_checkout_are_refused(entry_point: str, working_dir: str) -> None:
    with pytest.raises(StageError) as refused:
        validate_request(
            SourceRequest(repository=REPO, entry_point=entry_point, working_dir=working_dir)
        )
    assert "entry point" in refused.value.reason or "working directory" in refused.value.reason


def test_legitimate_refs_and_paths_pass() -> None:
    for branch in ("main", "feature/x-1", "release_2024.1", "origin/main", "user@feature"):
        validate_request(SourceRequest(repository=REPO, branch=branch))
    validate_request(SourceRequest(repository=REPO, tag="v1.2.3", commit="a" * 40))
    validate_request(SourceRequest(repository=REPO, entry_point="../tools/x.py", working_dir="sub"))


def test_shell_metacharacters_in_the_entry_point_stay_literal_arguments() -> None:
    # No shell ever sees the entry point: it is split like a command line, then passed as argv.
    assert split_entry_point("train.py; touch /tmp/pwned") == (
        "train.py;",
        False,
        ("touch", "/tmp/pwned"),
    )
    assert split_entry_point("train.py $(touch /tmp/pwned) `id` | sh") == (
        "train.py",
        False,
        ("$(touch", "/tmp/pwned)", "`id`", "|", "sh"),
    )
    with pytest.raises(StageError, match="entry point"):
        split_entry_point("train.py 'unbalanced")


def test_evil_entry_points_fail_the_plan_naming_the_field() -> None:
    task = TaskSpec.parse(
        {"id": "t", "script": {"repository": REPO, "entry_point": "../../../etc/x.py"}}
    )
    plan = make_plan(task, Settings(), HOST, SERVER)  # planning is pure: the source stage checks
    with pytest.raises(StageError, match="entry point"):
        validate_request(plan.source)


# --- Environment section --------------------------------------------------------------------
def _env_task(names: dict[str, str]) -> TaskSpec:
    section = {n: {"section": "Environment", "name": n, "value": v} for n, v in names.items()}
    return TaskSpec.parse(
        {
            "id": "t",
            "script": {"diff": "print(1)\n", "entry_point": "a.py"},
            "hyperparams": {"Environment": section},
        }
    )


@pytest.mark.parametrize(
    "name",
    [
        "A=B",  # would set another variable
        "X Y",
        "X\nY",
        "1X",
        "",
        "X-Y",
        "$(touch)",
        "PATH",  # the venv's interpreter first
        "VIRTUAL_ENV",
        "PYTHONHOME",
        "CUDA_VISIBLE_DEVICES",  # the agent's GPU allocation
        "NVIDIA_VISIBLE_DEVICES",
        "CLEARML_API_HOST",  # the task's SDK would talk to another server...
        "CLEARML_TASK_ID",  # ...or report into another task
        "CLEARML_API_SECRET_KEY",
        "CONVEYOR_PROCESS_TREE",  # the marker that finds the task's processes
        "CONVEYOR_TASK_ID",
        "TRAINS_API_HOST",
    ],
)
def test_environment_names_the_agent_owns_or_that_are_not_names_are_refused(name: str) -> None:
    env = task_env(_env_task({}), Settings(), SERVER, ())
    overrides = plan_overrides(_env_task({name: "evil"}), (), reserved_env=env.keys())
    assert name not in overrides.env
    assert any(repr(name) in refusal for refusal in overrides.refused), overrides.refused


def test_environment_values_with_nul_are_refused_and_good_names_pass() -> None:
    overrides = plan_overrides(_env_task({"GOOD": "x y $(z) `w`", "BAD": "a\x00b"}), ())
    assert overrides.env == {"GOOD": "x y $(z) `w`"}  # a value is data: never evaluated
    assert any("'BAD'" in r and "NUL" in r for r in overrides.refused)


# --- container.arguments ------------------------------------------------------------------------
DEFAULT = ArgsPolicy.from_settings(Settings())
ROOTED = ArgsPolicy(allowed=DEFAULT.allowed, volume_roots=("/data",))


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ("--privileged", "--privileged"),
        ("--privileged=false", "--privileged"),
        ("--cap-add=SYS_ADMIN", "--cap-add"),
        ("--cap-add ALL", "--cap-add"),
        ("--pid=host", "--pid"),
        ("--device=/dev/sda", "--device"),
        ("--security-opt seccomp=unconfined", "--security-opt"),
        ("--security-opt=apparmor=unconfined", "--security-opt"),
        ("--network=host", "--network"),
        ("--user=0", "--user"),
        ("-u root", "--user"),
        ("--userns=host", "--userns"),
        ("--uts=host", "--uts"),
        ("--cgroupns=host", "--cgroupns"),
        ("--mount type=bind,src=/,dst=/host", "--mount"),
        ("--env-file /etc/shadow", "--env-file"),
        ("--entrypoint sh", "--entrypoint"),
        ("-v /:/host", "--volume"),
        ("--volume=/var/run/docker.sock:/var/run/docker.sock", "--volume"),
        ("--volumes-from other", "--volumes-from"),
        ("-p 0.0.0.0:22:22", "-p"),
        ("--label conveyor.task=other", "--label"),
        ("-e 'A B=1'", "--env"),
        ("-e PATH", "--env"),
        ("ubuntu:22.04 sh -c 'touch /tmp/pwned'", "ubuntu:22.04"),
        ("; touch /tmp/pwned", ";"),
        ("$(touch /tmp/pwned)", "$(touch"),
        ("--ipc=host --shm-size '8g", "cannot be parsed"),
        ("--", "--"),
    ],
)
def test_dangerous_container_arguments_are_refused_by_default(arguments: str, named: str) -> None:
    with pytest.raises(StageError) as refused:
        parse_container_args(arguments, DEFAULT)
    assert named in refused.value.reason, refused.value.reason


@pytest.mark.parametrize(
    "volume",
    [
        "/data/../etc:/x",  # climbs out of the root after normalisation
        "/database:/x",  # shares a prefix with the root, is not inside it
        "/:/x",
        "data:/x",  # a named volume
        "/data/x:relative",
        "/data/x:/x:rw,z",  # mount options smuggled in the mode
        "/data/x:/x:ro:extra",
    ],
)
def test_volumes_outside_the_roots_are_refused(volume: str) -> None:
    with pytest.raises(StageError, match="--volume"):
        parse_container_args(f"--volume {volume}", ROOTED)


def test_volumes_inside_the_roots_pass() -> None:
    options = parse_container_args("-v /data/set:/in:ro --volume=/data:/all", ROOTED)
    assert [(v.source, v.target, v.read_only) for v in options.volumes] == [
        ("/data/set", "/in", True),
        ("/data", "/all", False),
    ]
