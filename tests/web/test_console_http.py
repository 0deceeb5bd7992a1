"""The web console over plain HTTP (no browser): sessions, login links, keyset paging, the
log and chart data, the live stream and a server stop while a page is open."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx

from agent.server.embedded import EmbeddedServer
from agent.server.web.session import decode_session, encode_session, issue_login_link
from agent.server.web.tasks_list import PAGE_SIZE
from tests.helpers import api_call


def _client(server: EmbeddedServer) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=30)
    creds = server.credentials
    reply = client.post(
        "/login", data={"access_key": creds.access_key, "secret_key": creds.secret_key}
    )
    assert reply.status_code == 303 and "conveyor_session" in client.cookies
    return client


def test_bad_login_and_used_or_forged_sessions_are_refused(embedded_server: EmbeddedServer) -> None:
    client = httpx.Client(base_url=embedded_server.url, timeout=30)
    reply = client.post("/login", data={"access_key": "x", "secret_key": "y"})
    assert reply.status_code == 401 and "invalid access key" in reply.text
    state = embedded_server.state
    token = issue_login_link(state.store)
    assert client.get(f"/login/once/{token}").status_code == 303
    assert client.get("/tasks").status_code == 200
    again = httpx.get(f"{embedded_server.url}/login/once/{token}")
    assert again.status_code == 401  # one time only
    cookie = encode_session(state, "conveyor")
    assert decode_session(state, cookie) is not None
    assert decode_session(state, cookie[:-1] + ("0" if cookie[-1] != "0" else "1")) is None
    assert decode_session(state, cookie, now=time.time() + 30 * 24 * 3600) is None


def test_pages_carry_a_csp_without_inline_script(embedded_server: EmbeddedServer) -> None:
    reply = _client(embedded_server).get("/tasks")
    csp = reply.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in reply.text and not re.search(r"\son[a-z]+=", reply.text)


def test_tasks_list_pages_by_cursor_without_repeats(embedded_server: EmbeddedServer) -> None:
    created = {
        api_call(embedded_server, "tasks.create", {"name": f"t{i}", "type": "training"})["id"]
        for i in range(PAGE_SIZE + 7)
    }
    client = _client(embedded_server)
    first = client.get("/tasks?sort=name&order=asc").text
    seen = re.findall(r'data-task="([0-9a-f]{32})"', first)
    more = re.search(r'hx-get="([^"]+)"[^>]*hx-target="#more-row"', first)
    assert more and len(seen) == PAGE_SIZE
    second = client.get(more[1].replace("&amp;", "&"), headers={"HX-Request": "true"}).text
    rest = re.findall(r'data-task="([0-9a-f]{32})"', second)
    assert set(seen) | set(rest) == created and not set(seen) & set(rest)
    assert "more-row" not in second


def test_console_pages_search_and_scalar_reduction(embedded_server: EmbeddedServer) -> None:
    task = api_call(embedded_server, "tasks.create", {"name": "log", "type": "training"})["id"]
    events = [
        {"task": task, "type": "log", "msg": f"line {i}", "timestamp": 10 + i} for i in range(3000)
    ]
    events += [
        {"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": v,
         "value": float(i % 7) + (1000.0 if i == 1234 else 0.0), "iter": i}
        for i in range(5000) for v in ("a", "b")
    ]  # fmt: skip
    api_call(embedded_server, "events.add_batch", {"requests": events})
    client = _client(embedded_server)
    tail = client.get(f"/tasks/{task}/log.json").json()
    assert tail["total"] == 3000 and tail["entries"][-1]["text"] == "line 2999"
    page = client.get(f"/tasks/{task}/log.json?offset=1000&limit=3").json()
    assert [e["text"] for e in page["entries"]] == ["line 1000", "line 1001", "line 1002"]
    found = client.get(f"/tasks/{task}/log.json", params={"q": r"^line 12\d$"}).json()
    assert [e["n"] for e in found["entries"]] == list(range(120, 130)) and found["next"] is None
    first = client.get(f"/tasks/{task}/log.json", params={"q": "line"}).json()
    assert len(first["entries"]) == 500 and first["next"] == 500
    further = client.get(f"/tasks/{task}/log.json", params={"q": "line", "from": 500}).json()
    assert further["entries"][0]["text"] == "line 500"
    assert client.get(f"/tasks/{task}/log.json", params={"q": "("}).status_code == 400
    chart = client.get(f"/tasks/{task}/scalars.json?metric=loss&width=100").json()
    assert [s["variant"] for s in chart["series"]] == ["a", "b"]
    assert all(len(s["x"]) <= 400 and max(s["y"]) == 1002.0 for s in chart["series"])
    zoomed = client.get(f"/tasks/{task}/scalars.json?metric=loss&width=100&xmin=10&xmax=20")
    assert zoomed.json()["series"][0]["x"] == list(range(10, 21))
    text = client.get(f"/tasks/{task}/console.txt").text
    assert text.count("\n") == 3000
    more = [
        {"task": task, "type": "log", "msg": f"more {i}", "timestamp": 99_999} for i in range(5)
    ]
    api_call(embedded_server, "events.add_batch", {"requests": more})
    tail = client.get(f"/tasks/{task}/log.json?limit=2").json()
    assert tail["total"] == 3005 and [e["n"] for e in tail["entries"]] == [3003, 3004]
    api_call(embedded_server, "tasks.reset", {"task": task, "force": True})
    api_call(embedded_server, "events.add_batch", {"requests": more[:2]})
    tail = client.get(f"/tasks/{task}/log.json").json()  # counted again after the reset
    assert tail["total"] == 2 and [e["text"] for e in tail["entries"]] == ["more 0", "more 1"]


def test_live_stream_sends_new_lines_and_a_stop_does_not_wait_for_it(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "server.db")
    server.start()
    task = api_call(server, "tasks.create", {"name": "live", "type": "training"})["id"]
    client = _client(server)
    received: list[str] = []
    opened = threading.Event()

    def listen() -> None:
        with client.stream("GET", f"/tasks/{task}/stream") as reply:
            opened.set()
            for line in reply.iter_lines():
                received.append(line)

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    assert opened.wait(10)
    api_call(
        server, "events.add_batch", {"requests": [{"task": task, "type": "log", "msg": "fresh"}]}
    )
    deadline = time.monotonic() + 10
    while not any("fresh" in line for line in received) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("fresh" in line for line in received)
    scalar = {"task": task, "type": "training_stats_scalar", "metric": "m", "variant": "v",
              "value": 1.0, "iter": 7}  # fmt: skip
    api_call(server, "events.add_batch", {"requests": [scalar]})
    deadline = time.monotonic() + 10  # the charts refresh when last_iteration changes
    while not any(line.startswith("data: [") and ", 7," in line for line in received):
        assert time.monotonic() < deadline, received
        time.sleep(0.05)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    reader.join(10)
    assert not reader.is_alive()


def test_queue_entries_move_and_go_through_the_queue_handlers(
    embedded_server: EmbeddedServer,
) -> None:
    queue = api_call(embedded_server, "queues.create", {"name": "gpu"})["id"]
    tasks = []
    for name in ("first", "second", "<b>third</b>"):
        task = api_call(embedded_server, "tasks.create", {"name": name, "type": "training"})["id"]
        api_call(embedded_server, "tasks.enqueue", {"task": task, "queue": queue})
        tasks.append(task)
    model = api_call(embedded_server, "models.create", {"name": "net", "uri": "file:///m.pt"})["id"]
    client = _client(embedded_server)
    page = client.get("/queues").text
    assert "&lt;b&gt;third&lt;/b&gt;" in page and "(3 queued)" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    reply = client.post(f"/queues/{queue}/action/front", data={"csrf": csrf[1], "task": tasks[2]})
    assert reply.status_code == 303 and "msg=front" in reply.headers["location"]
    entries = api_call(embedded_server, "queues.get_by_id", {"queue": queue})["queue"]["entries"]
    assert [e["task"] for e in entries] == [tasks[2], tasks[0], tasks[1]]
    client.post(f"/queues/{queue}/action/remove", data={"csrf": csrf[1], "task": tasks[0]})
    doc = api_call(embedded_server, "tasks.get_by_id", {"task": tasks[0]})["task"]
    assert doc["status"] == "created"
    assert client.post(f"/queues/{queue}/action/remove", data={"task": tasks[1]}).status_code == 403
    assert f'href="/models/{model}"' in client.get("/models").text
    assert "file:///m.pt" in client.get(f"/models/{model}").text
    assert client.get("/models/nope").status_code == 404


def test_compare_marks_differences_and_refuses_too_few(embedded_server: EmbeddedServer) -> None:
    ids = []
    for lr in ("0.1", "0.1", "0.5"):
        params = {
            "Args": {
                "lr": {"section": "Args", "name": "lr", "value": lr},
                "seed": {"section": "Args", "name": "seed", "value": "1"},
            }
        }
        pip = "numpy==1.26\nrequests\n" + ("torch==2.1\n" if lr == "0.5" else "")
        body = {"name": f"lr {lr}", "type": "training", "hyperparams": params,
                "script": {"requirements": {"pip": pip}}}  # fmt: skip
        ids.append(api_call(embedded_server, "tasks.create", body)["id"])
        loss = [
            {"task": ids[-1], "type": "training_stats_scalar", "metric": "loss", "variant": "t",
             "iter": i, "value": float(lr) * i}
            for i in range(10)
        ]  # fmt: skip
        api_call(embedded_server, "events.add_batch", {"requests": loss})
    client = _client(embedded_server)
    page = client.get("/compare", params={"ids": ",".join(ids)}).text
    assert re.search(r'<tr class="differs"><th>Args/lr</th>', page)
    assert re.search(r'<tr class="same"><th>Args/seed</th>', page)
    assert "Line diff: requirements (pip)" in page and "Line diff: uncommitted" not in page
    assert '<span class="add">+torch==2.1</span>' in page and "+1 -0 lines" in page
    assert '<div class="chart" data-metric="loss">' in page
    overlaid = client.get(
        "/compare/scalars.json", params={"ids": ",".join(ids), "metric": "loss", "width": 50}
    ).json()
    assert [(s["task"], s["variant"]) for s in overlaid["series"]] == [
        (ids[0], "lr 0.1"), (ids[1], "lr 0.1"), (ids[2], "lr 0.5"),
    ]  # fmt: skip
    assert overlaid["series"][2]["y"] == [0.5 * i for i in range(10)]
    assert client.get("/compare", params={"ids": ids[0]}).status_code == 400


def test_a_bad_edit_is_refused_whole_and_a_big_form_is_taken(
    embedded_server: EmbeddedServer,
) -> None:
    params = {
        "Args": {f"p{i}": {"section": "Args", "name": f"p{i}", "value": "0"} for i in range(1500)}
    }
    body = {"name": "draft", "type": "training", "hyperparams": params}
    task = api_call(embedded_server, "tasks.create", body)["id"]
    client = _client(embedded_server)
    page = client.get(f"/tasks/{task}/configuration").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    bad = {"csrf": csrf[1], "Args/p1": "changed", "docker_args": "--env 'unbalanced"}
    reply = client.post(f"/tasks/{task}/action/save", data=bad)
    assert reply.status_code == 303 and "error=docker%20arguments" in reply.headers["location"]
    doc = api_call(embedded_server, "tasks.get_by_id", {"task": task})["task"]
    assert doc["hyperparams"]["Args"]["p1"]["value"] == "0"  # nothing half-saved
    form = {"csrf": csrf[1], **{f"Args/p{i}": str(i) for i in range(1500)}}
    reply = client.post(f"/tasks/{task}/action/save", data=form)
    assert "msg=saved" in reply.headers["location"], reply.headers["location"]
    doc = api_call(embedded_server, "tasks.get_by_id", {"task": task})["task"]
    assert doc["hyperparams"]["Args"]["p1499"]["value"] == "1499"


def test_tasks_list_filters_tags_and_hides_archived(embedded_server: EmbeddedServer) -> None:
    def make(name: str, **fields: object) -> str:
        body = {"name": name, "type": "training", **fields}
        return str(api_call(embedded_server, "tasks.create", body)["id"])

    tagged = make("tagged", tags=["gpu", 'x"gpu'])
    almost = make("almost", tags=['x"gpu'])  # its JSON holds the text "gpu" in quotes
    archived = make("archived", system_tags=["archived"])
    client = _client(embedded_server)

    def listed(query: str) -> set[str]:
        return set(re.findall(r'data-task="([0-9a-f]{32})"', client.get(f"/tasks?{query}").text))

    assert listed("tag=gpu") == {tagged}
    assert almost in listed("") and archived not in listed("")
    assert archived in listed("archived=1")


def test_plots_list_cheaply_and_each_figure_comes_on_its_own(
    embedded_server: EmbeddedServer,
) -> None:
    task = api_call(embedded_server, "tasks.create", {"name": "plots", "type": "training"})["id"]
    figure = '{"data": [{"type": "bar", "y": [1, 2]}], "layout": {"title": "<b>x</b>"}}'
    events = [
        {"task": task, "type": "plot", "metric": "m", "variant": "v", "iter": i,
         "plot_str": figure.replace("[1, 2]", f"[{i}, 2]")}
        for i in range(3)
    ]  # fmt: skip
    url = f"{embedded_server.url}/files/p/{task}/metrics/s/img%20one.png"
    image_plot = {"data": [], "layout": {"images": [{"source": url}, {"source": "x://y"}]}}
    events.append({"task": task, "type": "plot", "metric": "mpl", "variant": "fig", "iter": 0,
                   "plot_str": json.dumps(image_plot)})  # fmt: skip
    events += [
        {"task": task, "type": "training_debug_image", "metric": "s", "variant": "<i>v</i>",
         "iter": 7, "url": url},
        {"task": task, "type": "training_debug_image", "metric": "s", "variant": "w",
         "iter": 8, "url": "https://elsewhere.example/a.png"},
    ]  # fmt: skip
    api_call(embedded_server, "events.add_batch", {"requests": events})
    client = _client(embedded_server)
    page = client.get(f"/tasks/{task}/plots").text
    seqs = re.findall(r'class="plotly-plot" data-seq="(\d+)"', page)
    assert len(seqs) == 2 and "latest of 3" in page and "plotly-strict.min.js" in page
    images = client.get(f"/tasks/{task}/plot.json", params={"seq": seqs[1]}).json()
    assert [i["source"] for i in images["layout"]["images"]] == [
        f"/web/files/p/{task}/metrics/s/img%20one.png", "x://y",
    ]  # fmt: skip
    seqs = seqs[:1]
    latest = client.get(f"/tasks/{task}/plot.json", params={"seq": seqs[0]})
    assert latest.json()["data"][0]["y"] == [2, 2]
    assert client.get(f"/tasks/{task}/plot.json", params={"seq": "x"}).status_code == 400
    assert client.get("/tasks/other/plot.json", params={"seq": seqs[0]}).status_code == 404
    outsider = httpx.get(f"{embedded_server.url}/tasks/{task}/plot.json?seq={seqs[0]}")
    assert outsider.status_code == 401
    samples = client.get(f"/tasks/{task}/samples").text
    assert f'<img src="/web/files/p/{task}/metrics/s/img%20one.png"' in samples
    assert "&lt;i&gt;v&lt;/i&gt;" in samples and "<i>v</i>" not in samples
    assert "https://elsewhere.example/a.png" in samples  # shown as text, never loaded
    assert 'elsewhere.example/a.png"' not in samples


def test_an_input_model_is_chosen_by_url(embedded_server: EmbeddedServer) -> None:
    client = _client(embedded_server)
    url = "file:///data/models/best%20weights.pt"
    tasks = [api_call(embedded_server, "tasks.create", {"name": n})["id"] for n in ("a", "b")]
    for task in tasks:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(f"/tasks/{task}").text)
        assert csrf
        bad = {"csrf": csrf[1], "model:Input Model": "ftp://host/x"}
        reply = client.post(f"/tasks/{task}/action/save", data=bad)
        assert "error=input%20model" in reply.headers["location"]
        form = {"csrf": csrf[1], "model:Input Model": url}
        reply = client.post(f"/tasks/{task}/action/save", data=form)
        assert "msg=saved" in reply.headers["location"], reply.headers["location"]
    chosen = [
        api_call(embedded_server, "tasks.get_by_id", {"task": t})["task"]["models"]["input"]
        for t in tasks
    ]
    assert chosen[0] == chosen[1] and chosen[0][0]["name"] == "Input Model"  # registered once
    model = api_call(embedded_server, "models.get_by_id", {"model": chosen[0][0]["model"]})
    assert model["model"]["uri"] == url and model["model"]["name"] == "best weights.pt"
