"""Browser sessions: a signed cookie, its CSRF token, and one-time login links.

The cookie is stateless (``<payload>.<hmac>``, signed with the server's JWT secret), so it
survives a restart of the server and needs no table. The CSRF token is derived from the
session's random nonce: a form can only be posted by a page the session itself rendered.
One-time login links are stored (hashed) in the ``meta`` table and deleted when used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from agent.server.state import ServerState
from agent.server.store import Store, set_meta

COOKIE = "conveyor_session"
SESSION_TTL = 7 * 24 * 3600
LOGIN_LINK_TTL = 24 * 3600
_LINK_PREFIX = "web_login_link:"


@dataclass(frozen=True)
class Session:
    user: str
    nonce: str
    expires: int


def _sign(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def encode_session(state: ServerState, user: str, now: float | None = None) -> str:
    """A new session's cookie value."""
    expires = int((now or time.time()) + SESSION_TTL)
    body = {"u": user, "n": secrets.token_hex(16), "e": expires}
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode()
    return f"{payload}.{_sign(state.jwt_secret, payload.encode())}"


def decode_session(state: ServerState, value: str, now: float | None = None) -> Session | None:
    """The session in a cookie value, or None if it is forged, malformed or expired."""
    payload, _, signature = value.partition(".")
    if not signature or not hmac.compare_digest(
        signature, _sign(state.jwt_secret, payload.encode())
    ):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload.encode()))
        session = Session(user=str(body["u"]), nonce=str(body["n"]), expires=int(body["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > (now or time.time()) else None


def csrf_token(state: ServerState, session: Session) -> str:
    return _sign(state.jwt_secret, f"csrf|{session.nonce}".encode())[:40]


def csrf_ok(state: ServerState, session: Session, token: str) -> bool:
    return bool(token) and hmac.compare_digest(token, csrf_token(state, session))


def _link_key(token: str) -> str:
    return _LINK_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def issue_login_link(store: Store) -> str:
    """A new one-time login token (valid for a day; ``/login/once/<token>`` uses it)."""
    token = secrets.token_urlsafe(24)
    with store.write() as conn:
        conn.execute("DELETE FROM meta WHERE key LIKE ? AND CAST(value AS REAL) < ?",
                     (_LINK_PREFIX + "%", time.time()))  # fmt: skip
        set_meta(conn, _link_key(token), str(time.time() + LOGIN_LINK_TTL))
    return token


def use_login_link(state: ServerState, token: str) -> bool:
    """Consume a one-time token: True once, if it was issued and has not expired."""
    with state.store.write() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (_link_key(token),)).fetchone()
        if row is None:
            return False
        conn.execute("DELETE FROM meta WHERE key=?", (_link_key(token),))
    return float(row[0]) > time.time()
