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


def test_queue_metrics_are_sampled_now(embedded_server: EmbeddedServer) -> None:
    queue = api_call(embedded_server, "queues.create", {"name": "metrics-q"})["id"]
    for name in ("a", "b"):
        task = api_call(embedded_server, "tasks.create", {"name": name})["id"]
        api_call(embedded_server, "tasks.enqueue", {"task": task, "queue": queue})
    body = {"queue_ids": [queue], "from_date": 0, "to_date": 4_000_000_000, "interval": 60}
    [series] = api_call(embedded_server, "queues.get_queue_metrics", body)["queues"]
    assert series["queue"] == queue
    assert series["queue_lengths"] == [2]
    assert len(series["dates"]) == 1 and series["avg_waiting_times"][0] >= 0
    past = {"queue_ids": [queue], "from_date": 0, "to_date": 1}
    [empty] = api_call(embedded_server, "queues.get_queue_metrics", past)["queues"]
    assert empty["queue_lengths"] == [] and empty["dates"] == []
    missing = api_raw(embedded_server, "queues.get_queue_metrics", {"queue_ids": ["nope"]})
    assert missing.status_code == 400
