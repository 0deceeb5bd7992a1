"""List-endpoint query semantics over HTTP: pattern conditions, field filters, projections,
hidden projects, clamped page sizes, and unknown fields refused by name (issue 20)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from agent.server.embedded import EmbeddedServer
from agent.server.listing import MAX_PAGE_SIZE
from tests.helpers import api_call, api_raw


def _unique() -> str:
    return uuid.uuid4().hex[:8]


def _task(server: EmbeddedServer, name: str, **fields: Any) -> str:
    task_id: str = api_call(server, "tasks.create", {"name": name, **fields})["id"]
    return task_id


def _names(server: EmbeddedServer, endpoint: str, key: str, body: dict[str, Any]) -> list[str]:
    return sorted(d["name"] for d in api_call(server, endpoint, body)[key])


def test_all_and_any_pattern_conditions(shared_server: EmbeddedServer) -> None:
    tag = _unique()
    for n, digest in enumerate(("aa11", "aa1122", "bb22")):
        _task(
            shared_server,
            f"hash-{n}",
            system_tags=[tag],
            runtime={"pipeline_job_hash": digest},
            comment="cached" if n == 2 else "",
        )

    def names(**body: Any) -> list[str]:
        return _names(shared_server, "tasks.get_all", "tasks", {"system_tags": [tag], **body})

    by_hash = {"fields": ["runtime.pipeline_job_hash"], "pattern": "^aa11$"}
    assert names(_all_=by_hash) == ["hash-0"]
    assert names(_all_={**by_hash, "pattern": "aa11"}) == ["hash-0", "hash-1"]
    either = {"fields": ["name", "comment"], "pattern": "cached|hash-0"}
    assert names(_any_=either) == ["hash-0", "hash-2"]
    assert names(_all_=either) == []
    assert names(_any_=either, _all_=by_hash) == ["hash-0"]


def test_model_and_project_patterns_and_field_filters(shared_server: EmbeddedServer) -> None:
    prefix = _unique()
    for n in range(2):
        model = api_call(shared_server, "models.create", {"name": f"{prefix}-m{n}", "uri": "x"})
        api_call(
            shared_server,
            "models.add_or_update_metadata",
            {"model": model["id"], "metadata": [{"key": "k", "type": "str", "value": str(n)}]},
        )
        api_call(
            shared_server, "projects.create", {"name": f"{prefix}-p{n}", "description": str(n)}
        )
    models = {"name": f"^{prefix}", "metadata.k.value": "1"}
    assert _names(shared_server, "models.get_all", "models", models) == [f"{prefix}-m1"]
    pattern = {"fields": ["description"], "pattern": "^0$"}
    found = _names(shared_server, "projects.get_all", "projects", {"_any_": pattern})
    assert f"{prefix}-p0" in found and f"{prefix}-p1" not in found


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("tasks.get_all", {"runtime.progress": {"$gt": 0}}, "runtime.progress"),
        ("tasks.get_all", {"no_such_filter": 1}, "no_such_filter"),
        ("tasks.get_all_ex", {"scroll_id": "abc"}, "scroll_id"),
        ("tasks.get_all", {"_all_": {"fields": ["name"], "pattern": "x", "flags": "i"}}, "_all_"),
        ("tasks.get_all", {"status_changed": [">yesterday"]}, "status_changed"),
        ("projects.get_all", {"parent": ["p"]}, "parent"),
        ("models.get_all", {"scroll_id": "abc"}, "scroll_id"),
        ("queues.get_all", {"no_such_filter": 1}, "no_such_filter"),
        ("workers.get_all", {"no_such_filter": 1}, "no_such_filter"),
    ],
)
def test_unknown_filters_are_refused_by_name(
    shared_server: EmbeddedServer, endpoint: str, body: dict[str, Any], field: str
) -> None:
    response = api_raw(shared_server, endpoint, body)
    meta = response.json()["meta"]
    assert (response.status_code, meta["result_subcode"]) == (400, 12), meta
    assert f"'{field}" in meta["result_msg"]


def test_presentation_only_fields_are_accepted(shared_server: EmbeddedServer) -> None:
    api_call(shared_server, "projects.get_all_ex", {"include_stats": True, "name": "^$"})
    api_call(shared_server, "tasks.get_all", {"order_by": ["@text_score"], "id": []})


def test_projection_keeps_the_parent_of_a_missing_leaf(shared_server: EmbeddedServer) -> None:
    task = _task(shared_server, "no-version")
    body = {"id": [task], "only_fields": ["id", "runtime.version"]}
    assert api_call(shared_server, "tasks.get_all", body)["tasks"] == [{"id": task, "runtime": {}}]


def test_hidden_projects_by_id_exact_name_or_flag(shared_server: EmbeddedServer) -> None:
    top = f"vis-{_unique()}"
    api_call(shared_server, "projects.create", {"name": top})
    name = f"{top}/.datasets/ds"
    hidden = api_call(shared_server, "projects.create", {"name": name, "system_tags": ["hidden"]})
    hidden_id = hidden["id"]

    def found(**body: Any) -> bool:
        projects = api_call(shared_server, "projects.get_all", body)["projects"]
        return hidden_id in [p["id"] for p in projects]

    assert not found(name=f"^{re.escape(top)}")
    assert found(name=f"^{re.escape(name)}$")
    assert found(id=[hidden_id])
    assert found(name=f"^{re.escape(top)}", search_hidden=True)
    assert found(name=f"^{re.escape(top)}", include_hidden=True)
    shallow = api_call(shared_server, "projects.get_all", {"shallow_search": True})["projects"]
    assert all("/" not in p["name"] for p in shallow) and shallow


def test_tag_expressions_over_http(shared_server: EmbeddedServer) -> None:
    tag = _unique()
    _task(shared_server, "plain", system_tags=[tag])
    _task(shared_server, "archived", system_tags=[tag, "archived"])
    body = {"system_tags": ["__$all", tag, "__$not", "archived"]}
    assert _names(shared_server, "tasks.get_all", "tasks", body) == ["plain"]


def test_page_and_batch_sizes_over_the_cap_are_clamped(shared_server: EmbeddedServer) -> None:
    task = _task(shared_server, "clamp")
    api_call(shared_server, "events.add", {"task": task, "type": "log", "msg": "one line"})
    body = {"id": [task], "page": 0, "page_size": MAX_PAGE_SIZE * 10}
    assert len(api_call(shared_server, "tasks.get_all", body)["tasks"]) == 1
    for endpoint in ("events.get_task_log", "events.get_task_events"):
        events = api_call(shared_server, endpoint, {"task": task, "batch_size": 100_000})["events"]
        assert [e["msg"] for e in events] == ["one line"], endpoint
    refused = api_raw(shared_server, "events.get_task_log", {"task": task, "batch_size": 0})
    assert refused.status_code == 400


def test_date_filters(shared_server: EmbeddedServer) -> None:
    tag = _unique()
    task = _task(shared_server, "dated", system_tags=[tag])
    doc = api_call(shared_server, "tasks.get_by_id", {"task": task})["task"]

    def found(**body: Any) -> bool:
        tasks = api_call(shared_server, "tasks.get_all", {"system_tags": [tag], **body})["tasks"]
        return [t["id"] for t in tasks] == [task]

    assert found(status_changed=[f">={doc['status_changed']}"])
    assert not found(status_changed=[f">{doc['status_changed']}"])
    recent = {"fields": ["last_update", "last_change"], "datetime": [f"<{doc['last_update']}"]}
    assert not found(_or_=recent)
    assert found(_or_={**recent, "datetime": [f"<={doc['last_update']}"]})


def test_task_plots_of_the_latest_iterations(shared_server: EmbeddedServer) -> None:
    """The SDK asks ``events.get_task_plots`` with ``iters`` (1 by default): the plots of the
    latest iterations only."""
    task = _task(shared_server, "plots")
    for iteration in (1, 2, 3):
        event = {"task": task, "type": "plot", "iter": iteration, "metric": "m", "plot_str": "{}"}
        api_call(shared_server, "events.add", event)

    def iterations(**body: Any) -> list[int]:
        plots = api_call(shared_server, "events.get_task_plots", {"task": task, **body})["plots"]
        return [p["iter"] for p in plots]

    assert iterations() == [1, 2, 3]
    assert iterations(iters=1) == [3]
    assert iterations(iters=2) == [2, 3]


def test_workers_by_pattern_tags_and_last_seen(shared_server: EmbeddedServer) -> None:
    """clearml-agent lists its own workers with ``worker_pattern="<name>*"``."""
    prefix = _unique()
    for n, tags in enumerate((["gpu"], [])):
        body = {"worker": f"{prefix}:{n}", "tags": tags, "timeout": 60}
        api_call(shared_server, "workers.register", body)

    def ids(**body: Any) -> list[str]:
        workers = api_call(shared_server, "workers.get_all", body)["workers"]
        return sorted(w["id"] for w in workers if w["id"].startswith(prefix))

    assert ids(worker_pattern=f"{prefix}*") == [f"{prefix}:0", f"{prefix}:1"]
    assert ids(worker_pattern=f"{prefix}:1") == [f"{prefix}:1"]
    assert ids(worker_pattern=f"{prefix}*", tags=["gpu"]) == [f"{prefix}:0"]
    assert ids(last_seen=600) == [f"{prefix}:0", f"{prefix}:1"]


def test_what_the_sdk_means_by_pipeline_project_and_task_types(
    shared_server: EmbeddedServer,
) -> None:
    """``PipelineController.get`` sends ``pipeline_project`` (project names) and
    ``DatasetTrigger`` sends ``task_types``: honoured as meant, never ignored."""
    name = f"{_unique()}/.pipelines/p"
    project = api_call(shared_server, "projects.create", {"name": name, "system_tags": ["hidden"]})
    tag = _unique()
    _task(shared_server, "in-it", project=project["id"], system_tags=[tag], type="controller")
    _task(shared_server, "outside", system_tags=[tag], type="data_processing")

    def names(**body: Any) -> list[str]:
        return _names(shared_server, "tasks.get_all", "tasks", {"system_tags": [tag], **body})

    assert names(pipeline_project=[name]) == ["in-it"]
    assert names(pipeline_project=["no/such/project"]) == []
    assert names(task_types=["data_processing"]) == ["outside"]
