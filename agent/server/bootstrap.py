"""Open a server's state: the database (migrated), its credentials, its default queue."""

from __future__ import annotations

from agent.server import auth, queue_ops
from agent.server.state import ServerConfig, ServerState
from agent.server.store import Store


def open_state(config: ServerConfig) -> ServerState:
    store = Store(config.db_path)
    with store.write() as conn:
        credentials, jwt_secret = auth.bootstrap(conn, config.credentials)
        queue_ops.ensure_default(conn, auth.DEFAULT_USER)
    state = ServerState(store=store, config=config, jwt_secret=jwt_secret, credentials=credentials)
    store.on_push = state.queue_waiters.notify  # a committed push wakes that queue's long polls
    return state
