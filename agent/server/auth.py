"""Credentials and tokens: key/secret pairs in the database, HS256 JWTs signed per server.

The SDK decodes the token without verifying it and reads ``api_version``, ``server_version``,
``feature_set`` and ``exp``; the server verifies signature and expiry on every request.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import sqlite3
import string
import threading
import time
from typing import Any

import jwt

from agent.server import errors
from agent.server.errors import ApiError, unauthorized
from agent.server.fields import opt_int
from agent.server.registry import Call, Identity, endpoint
from agent.server.state import (
    API_VERSION,
    COMPANY_ID,
    FEATURE_SET,
    MAX_TOKEN_TTL,
    SERVER_VERSION,
    Credentials,
    ServerState,
)
from agent.server.store import Store, now_iso, set_meta

JWT_ALGORITHM = "HS256"
DEFAULT_USER = "conveyor"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_ACCESS_KEY_LENGTH = 20
_SECRET_BYTES = 36


def generate_credentials() -> Credentials:
    key = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(_ACCESS_KEY_LENGTH))
    return Credentials(access_key=key, secret_key=secrets.token_urlsafe(_SECRET_BYTES))


def _upsert(conn: sqlite3.Connection, creds: Credentials) -> None:
    conn.execute(
        "INSERT INTO credentials (access_key, secret_key, user_id, created) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (access_key) DO UPDATE SET secret_key=excluded.secret_key",
        (creds.access_key, creds.secret_key, DEFAULT_USER, now_iso()),
    )


def bootstrap(conn: sqlite3.Connection, configured: Credentials | None) -> tuple[Credentials, str]:
    """Store the configured pair (or generate one on first start) and the JWT secret.

    Returns the pair to advertise and the token signing secret.
    """
    row = conn.execute("SELECT value FROM meta WHERE key='jwt_secret'").fetchone()
    jwt_secret = str(row[0]) if row else secrets.token_hex(32)
    if not row:
        set_meta(conn, "jwt_secret", jwt_secret)
    if configured is not None:
        _upsert(conn, configured)
        return configured, jwt_secret
    row = conn.execute(
        "SELECT c.access_key, c.secret_key FROM meta m "
        "JOIN credentials c ON c.access_key = m.value WHERE m.key='default_access_key'"
    ).fetchone()
    if row:
        return Credentials(str(row[0]), str(row[1])), jwt_secret
    creds = generate_credentials()
    _upsert(conn, creds)
    set_meta(conn, "default_access_key", creds.access_key)
    return creds, jwt_secret


def issue_token(state: ServerState, identity: Identity, ttl: int) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "identity": {
            "user": identity.user,
            "company": identity.company,
            "role": "admin",
            "user_name": identity.user,
            "company_name": identity.company,
        },
        "api_version": API_VERSION,
        "server_version": SERVER_VERSION,
        "feature_set": FEATURE_SET,
        "env": "conveyor",
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, state.jwt_secret, algorithm=JWT_ALGORITHM)


_VERIFIED_CACHE_SIZE = 4096
_verified: dict[tuple[str, str], tuple[Identity, float]] = {}
_verified_lock = threading.Lock()


def verify_token(state: ServerState, token: str) -> Identity:
    """Verify signature and expiry. A token already verified by this server is only checked for
    expiry again (PyJWT's decode costs ~0.5 ms, more than the rest of a queue pop)."""
    key = (state.jwt_secret, token)
    with _verified_lock:
        cached = _verified.get(key)
    if cached is not None:
        identity, exp = cached
        if time.time() < exp:
            return identity
    identity, exp = _decode(state, token)
    with _verified_lock:
        if len(_verified) >= _VERIFIED_CACHE_SIZE:
            _verified.clear()
        _verified[key] = (identity, exp)
    return identity


def _decode(state: ServerState, token: str) -> tuple[Identity, float]:
    try:
        claims = jwt.decode(
            token,
            state.jwt_secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["exp", "identity"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("token expired: log in again", errors.EXPIRED_TOKEN) from exc
    except jwt.InvalidTokenError as exc:
        raise unauthorized(f"invalid token: {exc}", errors.INVALID_TOKEN) from exc
    identity = claims.get("identity")
    if not isinstance(identity, dict) or not isinstance(identity.get("user"), str):
        raise unauthorized("invalid token: no identity", errors.INVALID_TOKEN)
    user = Identity(user=identity["user"], company=str(identity.get("company", COMPANY_ID)))
    return user, float(claims["exp"])


def check_basic(store: Store, header_value: str) -> Identity:
    try:
        decoded = base64.b64decode(header_value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise unauthorized("malformed Basic authorization header") from exc
    key, sep, secret = decoded.partition(":")
    if not sep:
        raise unauthorized("malformed Basic authorization header: expected key:secret")
    row = (
        store.conn()
        .execute("SELECT secret_key, user_id FROM credentials WHERE access_key=?", (key,))
        .fetchone()
    )
    if row is None or not hmac.compare_digest(str(row[0]), secret):
        raise unauthorized("invalid access key or secret key")
    return Identity(user=str(row[1]), company=COMPANY_ID)


def authenticate(state: ServerState, authorization: str) -> Identity:
    """Identity from an ``Authorization`` header: ``Bearer <jwt>`` or ``Basic key:secret``."""
    scheme, _, value = authorization.strip().partition(" ")
    if not value:
        raise unauthorized("missing credentials (Authorization header)", errors.MISSING_CREDENTIALS)
    if scheme.lower() == "bearer":
        return verify_token(state, value.strip())
    if scheme.lower() == "basic":
        return check_basic(state.store, value.strip())
    raise unauthorized(f"unsupported authorization scheme {scheme!r}", errors.MISSING_CREDENTIALS)


@endpoint("auth.login", public=True, inline=True)
def login(call: Call) -> dict[str, Any]:
    identity = authenticate(call.state, call.authorization)
    ttl = opt_int(call.body, "expiration_sec", call.state.config.token_ttl)
    assert ttl is not None
    if ttl <= 0 or ttl > MAX_TOKEN_TTL:
        raise ApiError(
            400, errors.VALIDATION, f"expiration_sec must be between 1 and {MAX_TOKEN_TTL}"
        )
    return {"token": issue_token(call.state, identity, ttl)}
