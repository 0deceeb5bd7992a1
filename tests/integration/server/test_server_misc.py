"""users.* and server.*: true answers, or a refusal naming what is not supported."""

from __future__ import annotations

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, api_raw


def test_users_are_the_stored_credentials(embedded_server: EmbeddedServer) -> None:
    me = api_call(embedded_server, "users.get_current_user")["user"]
    users = api_call(embedded_server, "users.get_all", {})["users"]
    assert [u["id"] for u in users] == [me["id"]]
    assert api_call(embedded_server, "users.get_all", {"id": ["nobody"]})["users"] == []


def test_no_stats_and_no_invented_answers(embedded_server: EmbeddedServer) -> None:
    response = api_raw(embedded_server, "server.get_stats", {})
    assert response.status_code == 404
    assert "server.get_stats" in response.json()["meta"]["result_msg"]
    response = api_raw(embedded_server, "server.report_stats_option", {"enabled": True})
    assert response.status_code == 400
    assert "usage statistics" in response.json()["meta"]["result_msg"]
    option = api_call(embedded_server, "server.report_stats_option", {})
    assert option["enabled"] is False
