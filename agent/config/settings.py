"""One frozen Settings object, read once at start-up.

Precedence: defaults < ``~/clearml.conf`` (its ``api`` section) < config file (TOML) <
``CLEARML_*`` environment < ``CONVEYOR_*`` environment < command-line flags.
The standard ``CLEARML_API_HOST`` / ``CLEARML_API_ACCESS_KEY`` / ``CLEARML_API_SECRET_KEY``
variables are honoured (below ``CONVEYOR_*``) so ClearML users need no new configuration.

Every field is documented once, here; ``config/agent.toml`` mirrors this list.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from agent.config.clearml_conf import default_path, read_clearml_conf
from agent.config.errors import SettingsError

ENV_PREFIX = "CONVEYOR_"
APP_NAME = "conveyor"


# container.arguments a task may use unless the operator says otherwise (docker_allowed_args).
DEFAULT_DOCKER_ARGS = (
    "--env",
    "--ipc",
    "--shm-size",
    "--memory",
    "--memory-swap",
    "--cpus",
    "--ulimit",
    "--volume",
    "--label",
    "--run-as-is",
)
DOCKER_PULL_POLICIES = ("missing", "always", "never")
LOG_LEVELS = ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")  # as clearml-agent takes


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def _default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME))


MAX_POLL_WAIT_S = 60.0  # the embedded server's longest long poll


@dataclass(frozen=True)
class Settings:
    # --- control plane -------------------------------------------------------------------
    # API server URL. Empty: start the embedded control plane in-process (the default).
    api_host: str = ""
    web_host: str = ""
    files_host: str = ""
    access_key: str = ""
    secret_key: str = ""
    # The embedded control plane (used when api_host is empty): its port; 0 picks a free one.
    embedded_port: int = 8008
    # --- worker --------------------------------------------------------------------------
    worker_id: str = ""  # empty: "<hostname>:conveyor" (":conveyor-services" in services mode)
    queues: tuple[str, ...] = ()  # empty: the server's default queue
    order_fairness: bool = False  # round-robin across queues instead of strict priority
    slots: int = 1  # tasks run concurrently
    services_mode: int = 0  # >0: host up to N light (controller) tasks at once, no GPUs
    create_queue: bool = False  # create the named queues when the server lacks them
    gpus: str = "none"  # "none", "all" or a comma list "0,1"
    # --- polling and lifecycle (seconds) -------------------------------------------------
    poll_min_interval: float = 0.05
    poll_max_interval: float = 0.5  # idle back-off ceiling: bounds pickup latency
    poll_wait: float = 20.0  # an idle long poll's wait (Conveyor's server); 0: poll instead
    heartbeat_interval: float = 10.0
    # The agent's registration: silent this long, the server drops it and requeues its task.
    worker_timeout: float = 600.0
    abort_poll_interval: float = 1.0
    drain_timeout: float = 3600.0  # first SIGTERM: how long running tasks may finish
    abort_grace: float = 10.0  # SIGTERM -> SIGKILL grace for a task's process group
    task_timeout: float = 0.0  # wall-clock limit per task; 0 means none
    # --- retries (docs/reliability.md: infrastructure failures requeue) -------------------
    max_retries: int = 2  # requeues of a task after infrastructure failures
    queue_max_retries: Mapping[str, str] = field(default_factory=dict)  # per queue name or id
    # --- directories ---------------------------------------------------------------------
    data_dir: Path = field(default_factory=_default_data_dir)
    cache_dir: Path = field(default_factory=_default_cache_dir)
    # --- source ------------------------------------------------------------------------
    # Credentials for private https repositories, handed to git through a temporary
    # GIT_ASKPASS (never in URLs, logs or the task record).
    git_user: str = ""
    git_pass: str = ""
    # --- environments --------------------------------------------------------------------
    python: str = ""  # interpreter when the task names none; empty: the agent's own major.minor
    package_manager: str = "uv"  # "uv" or "pip"
    model_cache_gb: float = 20.0  # input model cache bound (LRU eviction); 0: unbounded
    # --- parameters -----------------------------------------------------------------------
    args_style: str = (
        "argparse"  # Args for SDK-free scripts: "argparse" (--lr 0.1), "hydra" (lr=0.1)
    )
    sdk_detection: str = (
        "auto"  # does the script apply Args itself? "auto" (clearml required), "always", "never"
    )
    extra_ca_bundle: str = ""  # PEM bundle exported to tasks and installers (SSL_CERT_FILE...)
    extra_env: Mapping[str, str] = field(default_factory=dict)  # exported to every task
    # --- docker mode (docs/docker.md) ----------------------------------------------------
    docker: bool = False  # run every task in a container: its container.image, else docker_image
    docker_image: str = ""  # for tasks that name no image; empty: such tasks fail
    docker_host: str = ""  # the engine, e.g. "unix:///run/docker.sock"; empty: $DOCKER_HOST
    docker_pull: str = "missing"  # "missing", "always" or "never"
    docker_network: str = "host"  # network mode of task containers ("host", "none", a network)
    # container.arguments a task may use (docs/docker.md lists what each one does)
    docker_allowed_args: tuple[str, ...] = DEFAULT_DOCKER_ARGS
    docker_volume_roots: tuple[str, ...] = ()  # host dirs a task's --volume may mount from
    docker_run_as_is: bool = False  # no environment step: the image's own Python runs the task
    docker_uv: str = ""  # uv binary mounted into containers; empty: the agent's own
    # --- slurm glue (conveyor slurm; docs/slurm.md) -------------------------------------
    slurm_poll_interval: float = 5.0  # one squeue call and one task listing per poll
    slurm_job_prefix: str = "conveyor-"  # jobs are named <prefix><task id>-<attempt>
    slurm_max_jobs: int = 20  # jobs kept in Slurm at once, per queue (slurm_queues: max_jobs)
    # Seen by the compute nodes under the same path: secret hand-over files, job output.
    slurm_shared_dir: Path = field(default_factory=lambda: _default_data_dir() / "slurm")
    slurm_conveyor: str = "conveyor"  # the command on compute nodes (a shared venv's conveyor)
    slurm_bin_dir: str = ""  # where sbatch, squeue, scancel, sacct are; empty: PATH
    # sbatch resources for every queue: partition, account, qos, gres, cpus_per_task, mem, time,
    # constraint; slurm_queues.<queue name> the same keys (and max_jobs) for one queue.
    slurm_defaults: Mapping[str, str] = field(default_factory=dict)
    slurm_queues: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    slurm_job_env: Mapping[str, str] = field(default_factory=dict)  # non-secret job variables
    # --- logging -------------------------------------------------------------------------
    log_format: str = "auto"  # "auto" (pretty on a terminal, JSON otherwise), "json", "console"
    log_level: str = "info"

    @property
    def effective_worker_id(self) -> str:
        if self.worker_id:
            return self.worker_id
        role = "conveyor-services" if self.services_mode else "conveyor"
        return f"{socket.gethostname()}:{role}"

    @property
    def work_root(self) -> Path:
        """Per-task work directories live here (``<work_root>/<task id>``)."""
        return self.data_dir / "work"

    @property
    def spool_dir(self) -> Path:
        """Per-task log spools: lines wait here until the server acknowledges them."""
        return self.data_dir / "spool"

    @property
    def embedded(self) -> bool:
        return not self.api_host

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def masked(self) -> dict[str, Any]:
        """The effective settings as a plain dict, secrets masked (for ``conveyor config``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("secret_key", "git_pass"):
            if out[name]:
                out[name] = "****"
        out["extra_env"] = {k: "****" for k in self.extra_env}
        return out


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# Settings that are gone, and what replaced them (said instead of "unknown setting").
RETIRED = {
    "slurm_max_attempts": "replaced by max_retries (attempts = max_retries + 1) and "
    "queue_max_retries, the retry policy the daemon follows too (docs/reliability.md)",
}

# The ClearML variables a ClearML user already has set; lower precedence than CONVEYOR_*.
_CLEARML_ENV = {
    "CLEARML_API_HOST": "api_host",
    "CLEARML_WEB_HOST": "web_host",
    "CLEARML_FILES_HOST": "files_host",
    "CLEARML_API_ACCESS_KEY": "access_key",
    "CLEARML_API_SECRET_KEY": "secret_key",
    "CLEARML_WORKER_ID": "worker_id",
    "CLEARML_AGENT_GIT_USER": "git_user",
    "CLEARML_AGENT_GIT_PASS": "git_pass",
}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Convert a raw value (TOML value or environment string) to the field's type."""
    if name == "slurm_queues":
        return _slurm_queues(value, source)
    default = _FIELDS[name].default
    if default is dataclasses.MISSING:
        factory = _FIELDS[name].default_factory
        default = factory() if factory is not dataclasses.MISSING else None
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, Path):
            return Path(str(value)).expanduser()
        if isinstance(default, tuple):
            if isinstance(value, str):
                return tuple(v for v in value.replace(",", " ").split() if v)
            return tuple(str(v) for v in value)
        if isinstance(default, Mapping):
            if isinstance(value, str):
                pairs = (item.split("=", 1) for item in value.split(",") if "=" in item)
                return {k.strip(): v for k, v in pairs}
            return {str(k): str(v) for k, v in dict(value).items()}
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name!r} from {source}: {exc}") from exc


def _slurm_queues(value: Any, source: str) -> dict[str, dict[str, str]]:
    """``slurm_queues``: a TOML table of tables, or JSON in the environment variable."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise SettingsError(f"setting 'slurm_queues' from {source}: not JSON ({exc})") from exc
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise SettingsError(
            f"setting 'slurm_queues' from {source}: want {{queue: {{key: value}}}}, got {value!r}"
        )
    return {str(q): {str(k): str(v) for k, v in m.items()} for q, m in value.items()}


def _from_mapping(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and key not in _FIELDS:
            out.update(_from_mapping(value, source))  # TOML tables are only grouping
            continue
        if key in RETIRED:
            raise SettingsError(f"setting {key!r} in {source}: {RETIRED[key]}")
        if key not in _FIELDS:
            raise SettingsError(f"unknown setting {key!r} in {source}")
        out[key] = _coerce(key, value, source)
    return out


def _from_clearml_conf(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``api`` section of an existing clearml.conf: ClearML users need no new config."""
    found = read_clearml_conf(default_path(environ))
    return {name: _coerce(name, value, "clearml.conf") for name, value in found.items()}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, why in RETIRED.items():
        if ENV_PREFIX + name.upper() in environ:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}: {why}")
    for var, name in _CLEARML_ENV.items():
        if environ.get(var):
            out[name] = _coerce(name, environ[var], var)
    for name in _FIELDS:
        var = ENV_PREFIX + name.upper()
        if var in environ:
            out[name] = _coerce(name, environ[var], var)
    return out


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("CONVEYOR_CONFIG"):
        return Path(environ["CONVEYOR_CONFIG"]).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "agent.toml"


def load_settings(
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the Settings: defaults < file < environment < ``overrides`` (command-line flags).

    A missing default config file is fine; a missing explicitly named one is an error.
    ``overrides`` entries whose value is None are ignored (flags the user did not pass).
    """
    environ = os.environ if environ is None else environ
    explicit = config_path is not None or bool(environ.get("CONVEYOR_CONFIG"))
    path = config_path or default_config_path(environ)
    values: dict[str, Any] = _from_clearml_conf(environ)
    if path.exists():
        try:
            values.update(_from_mapping(tomllib.loads(path.read_text()), str(path)))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from exc
    elif explicit:
        raise SettingsError(f"config file {path} does not exist")
    values.update(_from_env(environ))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.slots < 1:
        raise SettingsError(f"slots must be at least 1, got {settings.slots}")
    if settings.services_mode < 0:
        raise SettingsError(f"services_mode must be 0 (off) or more, got {settings.services_mode}")
    if not 0 <= settings.poll_wait <= MAX_POLL_WAIT_S:
        raise SettingsError(
            f"poll_wait must be between 0 and {MAX_POLL_WAIT_S:g} s, got {settings.poll_wait:g}"
        )
    if settings.package_manager not in ("uv", "pip"):
        raise SettingsError(
            f"package_manager must be 'uv' or 'pip', got {settings.package_manager!r}"
        )
    if settings.args_style not in ("argparse", "hydra"):
        raise SettingsError(f"args_style must be argparse or hydra, got {settings.args_style!r}")
    if settings.sdk_detection not in ("auto", "always", "never"):
        raise SettingsError(
            f"sdk_detection must be auto, always or never, got {settings.sdk_detection!r}"
        )
    if settings.log_format not in ("auto", "json", "console"):
        raise SettingsError(
            f"log_format must be auto, json or console, got {settings.log_format!r}"
        )
    if settings.log_level.upper() not in LOG_LEVELS:
        raise SettingsError(
            f"log_level must be one of {', '.join(LOG_LEVELS).lower()}, got {settings.log_level!r}"
        )
    if settings.docker_pull not in DOCKER_PULL_POLICIES:
        raise SettingsError(
            f"docker_pull must be missing, always or never, got {settings.docker_pull!r}"
        )
    _validate_retries(settings)
    gpus = settings.gpus.strip()
    if gpus not in ("none", "all") and not all(p.strip().isdigit() for p in gpus.split(",")):
        raise SettingsError(f"gpus must be 'none', 'all' or a list like '0,1', got {gpus!r}")


MAX_WORKER_TIMEOUT_S = 7 * 24 * 3600.0  # what the server accepts as a registration timeout


def _validate_retries(settings: Settings) -> None:
    from agent.retry import MAX_RETRIES_LIMIT  # pure module, no settings import

    if not 0 <= settings.max_retries <= MAX_RETRIES_LIMIT:
        raise SettingsError(
            f"max_retries must be between 0 and {MAX_RETRIES_LIMIT}, got {settings.max_retries}"
        )
    for name, value in settings.queue_max_retries.items():
        text = str(value).strip()
        if not text.isdigit() or int(text) > MAX_RETRIES_LIMIT:
            raise SettingsError(
                f"queue_max_retries[{name!r}] must be between 0 and {MAX_RETRIES_LIMIT}, "
                f"got {value!r}"
            )
    if not settings.heartbeat_interval < settings.worker_timeout <= MAX_WORKER_TIMEOUT_S:
        raise SettingsError(
            f"worker_timeout must be above heartbeat_interval ({settings.heartbeat_interval:g} s) "
            f"and at most {MAX_WORKER_TIMEOUT_S:.0f} s, got {settings.worker_timeout:g}"
        )
