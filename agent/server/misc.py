"""users.* and server.*: what this server really knows of its users and of itself.

Every answer is true, not a placeholder: users are the identities of the stored credentials
(each acts as an admin of the one company); there are no stored preferences and no vaults
(``feature_set: basic``); server.info states fixed facts of this build. What the server does
not have (usage statistics) is not registered, so it answers 404 naming the endpoint.
"""

from __future__ import annotations

from typing import Any

from agent.server.errors import bad_request
from agent.server.fields import opt_bool, opt_str_list
from agent.server.registry import Call, endpoint
from agent.server.state import API_VERSION, COMPANY_ID, COMPANY_NAME, SERVER_VERSION


def _user(user_id: str) -> dict[str, Any]:
    return {
        "id": user_id,
        "name": user_id,
        "given_name": user_id,
        "family_name": "",
        "company": {"id": COMPANY_ID, "name": COMPANY_NAME},
        "role": "admin",
    }


@endpoint("users.get_current_user")
def get_current_user(call: Call) -> dict[str, Any]:
    return {"user": _user(call.user), "getting_started": {}, "settings": {}}


@endpoint("users.get_all", "users.get_all_ex")
def users_get_all(call: Call) -> dict[str, Any]:
    """The users of the stored credentials (filtered by ``id`` when given)."""
    wanted = opt_str_list(call.body, "id")
    rows = call.store.conn().execute("SELECT DISTINCT user_id FROM credentials ORDER BY 1")
    known = [str(r[0]) for r in rows.fetchall()]
    return {"users": [_user(u) for u in known if wanted is None or u in wanted]}


@endpoint("users.get_preferences")
def get_preferences(call: Call) -> dict[str, Any]:
    """No preferences are stored (there is no users.set_preferences): an empty set, truly."""
    return {"preferences": {}}


@endpoint("users.get_vaults")
def get_vaults(call: Call) -> dict[str, Any]:
    """Vaults are not a feature of this server (``feature_set: basic``): disabled, none."""
    return {"enabled": False, "vaults": []}


@endpoint("server.info", "debug.ping")
def server_info(call: Call) -> dict[str, Any]:
    return {
        "version": SERVER_VERSION,
        "api_version": API_VERSION,
        "server": "conveyor",
        "uid": COMPANY_ID,
    }


@endpoint("server.report_stats_option")
def report_stats_option(call: Call) -> dict[str, Any]:
    """This server never reports usage statistics anywhere: the option is off, and stays off."""
    if opt_bool(call.body, "enabled"):
        raise bad_request("field 'enabled': this server does not report usage statistics")
    return {"enabled": False, "supported": False}
