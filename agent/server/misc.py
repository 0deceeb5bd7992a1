"""Endpoints the SDK or the web UI touch that need only a harmless, well-formed answer."""

from __future__ import annotations

from typing import Any

from agent.server.registry import Call, endpoint
from agent.server.state import API_VERSION, COMPANY_ID, COMPANY_NAME, SERVER_VERSION


def _user(call: Call) -> dict[str, Any]:
    return {
        "id": call.user,
        "name": call.user,
        "given_name": call.user,
        "family_name": "",
        "company": {"id": COMPANY_ID, "name": COMPANY_NAME},
        "role": "admin",
    }


@endpoint("users.get_current_user")
def get_current_user(call: Call) -> dict[str, Any]:
    return {"user": _user(call), "getting_started": {}, "settings": {}}


@endpoint("users.get_all", "users.get_all_ex")
def users_get_all(call: Call) -> dict[str, Any]:
    return {"users": [_user(call)]}


@endpoint("users.get_preferences")
def get_preferences(call: Call) -> dict[str, Any]:
    return {}


@endpoint("users.get_vaults")
def get_vaults(call: Call) -> dict[str, Any]:
    return {"enabled": False, "vaults": []}


@endpoint("server.info", "debug.ping")
def server_info(call: Call) -> dict[str, Any]:
    return {
        "version": SERVER_VERSION,
        "api_version": API_VERSION,
        "server": "conveyor",
        "uid": COMPANY_ID,
    }


@endpoint("server.get_stats", "server.report_stats_option")
def server_stats(call: Call) -> dict[str, Any]:
    return {"enabled": False}
