"""The web console's pure parts: M4 reduction, \\r collapse, SDK link mapping, filters."""

from __future__ import annotations

import random

from agent.server.web.console import collapse
from agent.server.web.links import task_link_target
from agent.server.web.scalars import m4
from agent.server.web.tasks_list import parse_filter


def test_m4_keeps_every_spike_and_the_ends() -> None:
    xs = list(range(100_000))
    ys = [random.random() for _ in xs]
    ys[31_337], ys[77_777] = 1e6, -1e6
    rx, ry = m4(xs, ys, width=100)
    assert len(rx) <= 400
    assert 1e6 in ry and -1e6 in ry
    assert rx[0] == 0 and rx[-1] == 99_999
    assert rx == sorted(rx)


def test_m4_returns_raw_points_when_few_and_honours_the_range() -> None:
    xs, ys = [3.0, 1.0, 2.0], [30.0, 10.0, 20.0]
    assert m4(xs, ys, width=10) == ([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
    assert m4(xs, ys, width=10, x0=1.5, x1=2.5) == ([2.0], [20.0])


def test_carriage_return_progress_collapses_to_its_last_state() -> None:
    assert collapse("10%\r50%\r100%") == "100%"
    assert collapse("a\nstep 1\rstep 2\r\nb") == "a\nstep 2\nb"
    assert collapse("plain") == "plain"


def test_sdk_links_map_to_task_tabs() -> None:
    tid = "0123456789abcdef0123456789abcdef"
    assert task_link_target(f"/projects/p1/tasks/{tid}/output/log") == f"/tasks/{tid}/console"
    assert task_link_target(f"/projects/*/experiments/{tid}/output/metrics/scalar") == (
        f"/tasks/{tid}/scalars"
    )
    assert task_link_target(f"/projects/p/experiments/{tid}/hyper-params/hyper-param/Args") == (
        f"/tasks/{tid}/configuration"
    )
    assert task_link_target(f"/projects/p/experiments/{tid}") == f"/tasks/{tid}/execution"
    assert task_link_target(f"/projects/p/experiments/{tid}/output/debugImages") == (
        f"/tasks/{tid}/samples"
    )
    assert task_link_target(f"/datasets/simple/p/experiments/{tid}") == f"/tasks/{tid}/execution"
    assert task_link_target("/projects/p") is None


def test_list_filter_refuses_unknown_sorts_and_statuses() -> None:
    flt = parse_filter({"sort": "doc; DROP TABLE tasks", "status": "nope", "order": "asc"})
    assert flt.sort == "created" and flt.status == "" and not flt.descending


def test_login_only_sends_the_browser_to_a_local_path() -> None:
    from agent.server.web.login import _next

    assert _next("/tasks/abc/console?x=1") == "/tasks/abc/console?x=1"
    for bad in ("//evil.example", "/\\evil.example", "https://evil.example", "/a\nb", ""):
        assert _next(bad) == "/tasks"
