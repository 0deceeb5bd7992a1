"""What every request handler can reach: the store and the server's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.server.machine_history import MachineHistory
from agent.server.store import Store
from agent.server.waiters import QueueWaiters

API_VERSION = "2.31"  # the SDK picks its highest schema <= this; 2.31 matches clearml-server 2.0
SERVER_VERSION = "2.0.0"
FEATURE_SET = "basic"  # anything else makes the SDK ask for vaults
COMPANY_ID = "conveyor"
COMPANY_NAME = "Conveyor"
DEFAULT_QUEUE_NAME = "default"
DEFAULT_WORKER_TIMEOUT = 600.0  # seconds without a report before a worker is dropped
DEFAULT_TOKEN_TTL = 30 * 24 * 3600
MAX_TOKEN_TTL = 365 * 24 * 3600
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # API request bodies (the SDK's event batches stay < 15 MB)
FILES_DIRNAME = "files"  # the file service's storage, next to the database by default


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class ServerConfig:
    db_path: Path
    credentials: Credentials | None = None  # explicit pair; None: use the stored/generated one
    worker_timeout: float | None = None  # overrides every worker's registration timeout
    watchdog_interval: float = 5.0
    max_retries: int = 2  # a lost worker's task: requeues when the task sets no cap (retry.py)
    token_ttl: int = DEFAULT_TOKEN_TTL
    files_root: Path | None = None  # the file service's storage; None: <db dir>/files
    files_quota: int | None = None  # bytes the file service may store; None: the disk's size
    files_public: bool = False  # downloads without a token (uploads and deletes always need one)
    max_body: int = DEFAULT_MAX_BODY  # bytes of an API request body; larger is 413 (not /files)

    @property
    def files_dir(self) -> Path:
        return self.files_root or self.db_path.resolve().parent / FILES_DIRNAME


@dataclass(frozen=True)
class ServerState:
    store: Store
    config: ServerConfig
    jwt_secret: str
    credentials: Credentials  # the configured pair, or the first-start generated one
    queue_waiters: QueueWaiters = field(default_factory=QueueWaiters)  # long polls
    machine_history: MachineHistory = field(default_factory=MachineHistory)  # web charts
