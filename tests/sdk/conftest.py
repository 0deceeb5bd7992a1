"""One control plane and two real agents (`default`, `services`) for the SDK conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.server.embedded import EmbeddedServer
from tests.helpers import sdk_env
from tests.sdk.support import Plane, start_agent


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """The embedded server, a `default` agent with two slots (HPO concurrency, parallel steps)
    and a `services` agent in services mode (pipeline and HPO controllers), for the session."""
    root = tmp_path_factory.mktemp("sdk-plane")
    cache = root / "cache"
    with EmbeddedServer(root / "server.db") as server:
        default = start_agent(server, root, cache, "default", "--slots", "2")
        try:
            services = start_agent(
                server, root, cache, "services", "--services-mode", "4", "--create-queue"
            )
        except BaseException:
            default.stop()
            raise
        try:
            yield Plane(server, sdk_env(server), default, services)
        finally:
            services.stop()
            default.stop()
