"""Transport and auth: paths, methods, envelopes, tokens, credentials."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import jwt
import pytest

from agent.server import registry
from agent.server.embedded import EmbeddedServer, ServerRefused, env_lines
from agent.server.state import Credentials
from tests.helpers import REPO_ROOT, api_call, api_raw, login, token_for


def _bearer(server: EmbeddedServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(server)}"}


@pytest.mark.parametrize("prefix", ["", "/v2.5", "/v2.23", "/v2.31", "/v2.99"])
def test_any_version_prefix_or_none(shared_server: EmbeddedServer, prefix: str) -> None:
    url = f"{shared_server.url}{prefix}/queues.get_default"
    response = httpx.post(url, headers=_bearer(shared_server), json={})
    assert response.status_code == 200
    assert response.json()["data"]["name"] == "default"


def test_get_with_json_body_and_query_args_merged(shared_server: EmbeddedServer) -> None:
    task = api_call(shared_server, "tasks.create", {"name": "via-get"})["id"]
    headers = _bearer(shared_server)
    by_body = httpx.request(
        "GET", f"{shared_server.url}/tasks.get_by_id", headers=headers, json={"task": task}
    )
    by_query = httpx.get(f"{shared_server.url}/tasks.get_by_id?task={task}", headers=headers)
    assert by_body.json()["data"]["task"]["id"] == task
    assert by_query.json()["data"]["task"]["name"] == "via-get"


def test_envelope_shape_and_status_equal_result_code(shared_server: EmbeddedServer) -> None:
    ok = api_raw(shared_server, "queues.get_default", {})
    meta = ok.json()["meta"]
    assert (ok.status_code, meta["result_code"], meta["result_subcode"]) == (200, 200, 0)
    bad = api_raw(shared_server, "tasks.get_by_id", {"task": "nope"})
    meta = bad.json()["meta"]
    assert (bad.status_code, meta["result_code"], meta["result_subcode"]) == (400, 400, 101)
    assert "nope" in meta["result_msg"]


def test_unknown_endpoint_is_404_not_5xx(shared_server: EmbeddedServer) -> None:
    for endpoint in ("tasks.no_such_action", "nosuchservice.get_all"):
        response = api_raw(shared_server, endpoint, {})
        assert response.status_code == 404
        assert response.json()["meta"]["result_code"] == 404
    response = httpx.get(f"{shared_server.url}/not-an-endpoint", headers=_bearer(shared_server))
    assert response.status_code == 404


def test_login_token_claims_and_expiration(shared_server: EmbeddedServer) -> None:
    token = login(shared_server, expiration_sec=3600)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["api_version"] == "2.31"
    assert claims["feature_set"] == "basic"
    assert claims["server_version"]
    assert claims["identity"]["user"]
    assert abs(claims["exp"] - (time.time() + 3600)) < 60


def test_login_with_bearer_token_renews_it(shared_server: EmbeddedServer) -> None:
    response = httpx.get(f"{shared_server.url}/auth.login", headers=_bearer(shared_server))
    assert response.status_code == 200
    assert response.json()["data"]["token"]


def test_bad_credentials_and_tokens_are_401(shared_server: EmbeddedServer) -> None:
    creds = shared_server.credentials
    url = shared_server.url
    assert httpx.get(f"{url}/auth.login", auth=(creds.access_key, "wrong")).status_code == 401
    assert httpx.get(f"{url}/auth.login", auth=("NOSUCHKEY", "x")).status_code == 401
    assert httpx.get(f"{url}/auth.login").status_code == 401
    garbage = base64.b64encode(b"no-colon").decode()
    headers = {"Authorization": f"Basic {garbage}"}
    assert httpx.get(f"{url}/auth.login", headers=headers).status_code == 401

    assert httpx.post(f"{url}/tasks.get_all", json={}).status_code == 401
    for token in (
        "garbage",
        jwt.encode({"exp": time.time() + 60}, "another-server-secret-of-32-bytes!!"),
    ):
        response = api_raw(shared_server, "tasks.get_all", {}, token=str(token))
        assert response.status_code == 401
        assert response.json()["meta"]["result_code"] == 401
        assert "token" in response.json()["meta"]["result_msg"]


def test_expired_token_is_refused(shared_server: EmbeddedServer) -> None:
    claims = {"identity": {"user": "conveyor", "company": "conveyor"}, "exp": int(time.time()) - 5}
    expired = jwt.encode(claims, shared_server.state.jwt_secret, algorithm="HS256")
    response = api_raw(shared_server, "tasks.get_all", {}, token=expired)
    assert response.status_code == 401
    assert "expired" in response.json()["meta"]["result_msg"]


def test_login_rejects_bad_expiration(shared_server: EmbeddedServer) -> None:
    creds = shared_server.credentials
    for value in ("0", "-5", "abc"):
        response = httpx.get(
            f"{shared_server.url}/auth.login",
            auth=(creds.access_key, creds.secret_key),
            params={"expiration_sec": value},
        )
        assert response.status_code == 400, value
        assert "expiration_sec" in response.json()["meta"]["result_msg"]


def test_basic_auth_works_on_any_endpoint(shared_server: EmbeddedServer) -> None:
    creds = shared_server.credentials
    response = httpx.post(
        f"{shared_server.url}/queues.get_default",
        auth=(creds.access_key, creds.secret_key),
        json={},
    )
    assert response.status_code == 200


def test_credentials_persist_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with EmbeddedServer(db) as first:
        generated = first.credentials
        default_queue = api_call(first, "queues.get_default")["id"]
    with EmbeddedServer(db) as second:
        assert second.credentials == generated
        assert api_call(second, "queues.get_default")["id"] == default_queue
        assert len(api_call(second, "queues.get_all")["queues"]) == 1


def test_explicit_credentials_and_public_bind_rule(tmp_path: Path) -> None:
    with pytest.raises(ServerRefused, match="credentials"):
        EmbeddedServer(tmp_path / "s.db", host="0.0.0.0")
    creds = Credentials("MYACCESSKEY", "my-secret")
    with EmbeddedServer(tmp_path / "s.db", host="0.0.0.0", credentials=creds) as server:
        assert server.credentials == creds
        assert server.url.startswith("http://127.0.0.1:")
        response = httpx.get(f"{server.url}/auth.login", auth=("MYACCESSKEY", "my-secret"))
        assert response.status_code == 200


def test_env_lines() -> None:
    lines = env_lines("http://127.0.0.1:8008", Credentials("K", "S"), files_host="file:///f")
    assert lines == [
        "CLEARML_API_HOST=http://127.0.0.1:8008",
        "CLEARML_WEB_HOST=http://127.0.0.1:8008",
        "CLEARML_FILES_HOST=file:///f",
        "CLEARML_API_ACCESS_KEY=K",
        "CLEARML_API_SECRET_KEY=S",
    ]


def test_docs_list_every_endpoint() -> None:
    docs = (REPO_ROOT / "docs" / "server.md").read_text()
    missing = [name for name in registry.names() if f"`{name}`" not in docs]
    assert missing == []


def test_port_in_use_fails_start_cleanly(embedded_server: EmbeddedServer, tmp_path: Path) -> None:
    taken = EmbeddedServer(tmp_path / "other.db", port=embedded_server.port)
    with pytest.raises(OSError):
        taken.start()
    assert api_call(embedded_server, "queues.get_default")["name"] == "default"
