"""Fixtures for the security suite: an agent cache, and a private git host (smart HTTP behind
Basic auth, from tests/integration/pipeline/gitservers.py)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "integration" / "pipeline"))
from gitservers import (
    HTTP_TOKEN,
    HTTP_USER,
    SERVER_WAIT,
    GitHttpHandler,
    commit_all,
    git,
)

DUMP_ENV = """\
import json, os, sys
with open(sys.argv[1], "w") as f:
    json.dump(dict(os.environ), f)
print("environment written")
"""


@dataclass(frozen=True)
class PrivateGit:
    base_url: str  # http://127.0.0.1:<port>/ (no credentials)
    user: str
    token: str
    seen_authorization: list[str]

    @property
    def clean_url(self) -> str:
        return f"{self.base_url}private.git"

    def url_with(self, token: str) -> str:
        host = self.base_url.removeprefix("http://")
        return f"http://{self.user}:{token}@{host}private.git"


@pytest.fixture(scope="session")
def agent_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-agent-cache")


@pytest.fixture(scope="module")
def private_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateGit]:
    """A repository (``dump_env.py``: the task's environment as JSON) on a private host."""
    root = tmp_path_factory.mktemp("private-git")
    bare = root / "private.git"
    git(root, "init", "-q", "--bare", str(bare))
    work = root / "work"
    git(root, "clone", "-q", str(bare), str(work))
    (work / "dump_env.py").write_text(DUMP_ENV)
    commit_all(work, "dump")
    git(work, "push", "-q", "origin", "HEAD:main")
    git(bare, "symbolic-ref", "HEAD", "refs/heads/main")
    attributes = {"project_root": root, "seen_authorization": []}
    handler = type("Handler", (GitHttpHandler,), attributes)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PrivateGit(
            f"http://127.0.0.1:{server.server_port}/",
            HTTP_USER,
            HTTP_TOKEN,
            handler.seen_authorization,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=SERVER_WAIT)
