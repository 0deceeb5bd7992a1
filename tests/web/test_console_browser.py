"""The web console in a real browser: SDK links, live console, charts, clone-edit-enqueue run by a
real `conveyor daemon`, abort, escaping, CSRF and login (one server, daemon and browser)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select

from agent.server.embedded import EmbeddedServer
from tests.helpers import api_call, run_sdk, sdk_env
from tests.integration.daemon.support import Agent, console_text, create_task, task_doc, wait_final
from tests.web.conftest import QUEUE, log_in, session_client, wait

pytestmark = pytest.mark.slow

XSS = "<img src=x onerror=\"document.title='pwned'\">"

ARGS_SCRIPT = textwrap.dedent(
    """
    import argparse, os
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    print(f"lr is {args.lr}")
    print("model has", open(os.environ["CONVEYOR_INPUT_MODEL_BASE"]).read().strip())
    """
)

TICKS_SCRIPT = textwrap.dedent(
    """
    import time
    for i in range(600):
        print(f"tick {i}", flush=True)
        time.sleep(0.2)
    """
)


def _text(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def _no_script_ran(driver: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.accept()
    assert driver.title != "pwned"
    # nothing tried to run inline script either (the CSP would block it and say so)
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_unauthenticated_request_is_sent_to_login(
    browser: WebDriver, server: EmbeddedServer
) -> None:
    browser.delete_all_cookies()
    browser.get(f"{server.url}/tasks/abc/console")
    wait(browser, ec.url_contains("/login?next="))
    assert browser.find_element(By.NAME, "access_key")
    log_in(browser, server)


def test_sdk_link_opens_console_lines_and_a_scalar_chart(
    logged_in: WebDriver, server: EmbeddedServer
) -> None:
    proc = run_sdk(
        """
        import numpy
        from clearml import Task
        task = Task.init(project_name="web tests", task_name="sdk run")
        print("hello from the sdk script")
        logger = task.get_logger()
        for i in range(200):
            logger.report_scalar("loss", "train", 1.0 / (i + 1), i)
        figure = {"data": [{"type": "scatter", "x": [1, 2, 3], "y": [3, 1, 2]}],
                  "layout": {"title": {"text": "a plotly figure"}}}
        logger.report_plotly("custom", "figure", figure=figure, iteration=1)
        logger.report_table("results", "table", iteration=1, table_plot=[["k", "v"], ["lr", 0.1]])
        image = numpy.zeros((24, 32, 3), dtype=numpy.uint8)
        image[:, :16] = (255, 0, 0)
        logger.report_image("samples", "red half", iteration=3, image=image)
        task.close()
        """,
        sdk_env(server),
    )
    output = proc.stdout + proc.stderr
    link = re.search(r"results page: (\S+)", output)
    assert link, output
    assert "/output/log" in link[1]
    logged_in.get(link[1])
    wait(logged_in, ec.url_contains("/console"))
    wait(logged_in, lambda d: "hello from the sdk script" in _text(d, "#console"))
    logged_in.find_element(By.ID, "console-q").send_keys("hello fr[o]m")
    logged_in.find_element(By.CSS_SELECTOR, "#console-search button[type=submit]").click()
    wait(logged_in, lambda d: "1 matching" in _text(d, "#console-info"))
    assert "hello from the sdk script" in _text(logged_in, "#console")
    logged_in.find_element(By.CSS_SELECTOR, "[data-tab=scalars]").click()
    wait(
        logged_in,
        ec.presence_of_element_located((By.CSS_SELECTOR, ".chart[data-metric=loss] canvas")),
    )
    _plots_and_samples_show(logged_in)


def _plots_and_samples_show(driver: WebDriver) -> None:
    """The plots tab draws what report_plotly and report_table stored (plotly divs with their
    data), the debug samples tab shows the reported image (loaded through the files route)."""
    driver.find_element(By.CSS_SELECTOR, "[data-tab=plots]").click()
    wait(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".plotly-plot[data-state=drawn]")) == 2,
    )
    traces = driver.execute_script(
        "return [...document.querySelectorAll('.plotly-plot')].map("
        "(el) => (el.data || []).map((t) => t.type + ':' + (t.y ? t.y.length : typeof t.cells)))"
    )
    assert sorted(traces) == [["scatter:3"], ["table:object"]], traces
    driver.find_element(By.CSS_SELECTOR, "[data-tab=samples]").click()
    loaded = (
        "return [...document.querySelectorAll('.sample img')]"
        ".map((i) => i.complete && i.naturalWidth)"
    )
    wait(driver, lambda d: d.execute_script(loaded) == [32])
    _no_script_ran(driver)


def test_clone_edit_enqueue_runs_with_the_new_values(
    logged_in: WebDriver, server: EmbeddedServer, agent: Agent, tmp_path: Path
) -> None:
    models = {}
    for name in ("first", "second"):
        (tmp_path / name).write_text(f"{name} weights\n")
        body = {"name": name, "uri": (tmp_path / name).as_uri()}
        models[name] = api_call(server, "models.create", body)["id"]
    params = {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1", "type": "float"}}}
    source = create_task(
        server, "args run", {"diff": ARGS_SCRIPT, "entry_point": "train.py"}, queue=QUEUE,
        hyperparams=params, models={"input": [{"name": "base", "model": models["first"]}]},
    )  # fmt: skip
    assert wait_final(server, source)["status"] == "completed"
    logged_in.get(f"{server.url}/tasks/{source}/configuration")
    logged_in.find_element(By.CSS_SELECTOR, "[data-action=clone]").click()
    wait(logged_in, ec.url_contains("msg=cloned"))
    field = logged_in.find_element(By.NAME, "Args/lr")
    field.clear()
    field.send_keys("0.777")
    model = logged_in.find_element(By.NAME, "model:base")
    model.clear()
    model.send_keys(models["second"])
    logged_in.find_element(By.CSS_SELECTOR, "[data-action=save]").click()
    wait(logged_in, ec.url_contains("msg=saved"))
    clone = logged_in.find_element(By.ID, "task").get_attribute("data-task")
    assert clone and clone != source
    Select(logged_in.find_element(By.NAME, "queue")).select_by_visible_text(QUEUE)
    logged_in.find_element(By.CSS_SELECTOR, "[data-action=enqueue]").click()
    doc = wait_final(server, clone)
    text = console_text(server, clone)
    assert doc["status"] == "completed", (doc.get("status_reason"), text)
    assert "lr is 0.777" in text
    assert "model has second weights" in text
    _stages_shown(logged_in, server, clone)


def _stages_shown(driver: WebDriver, server: EmbeddedServer, task_id: str) -> None:
    """The info tab's pipeline timeline of a run the daemon made: every stage, ended."""
    driver.get(f"{server.url}/tasks/{task_id}/info")
    rows = driver.find_elements(By.CSS_SELECTOR, "#stages tr.stage")
    assert [r.get_attribute("data-stage") for r in rows] == [
        "source",
        "models",
        "environment",
        "run",
    ]
    for row in rows:
        seconds = float(row.find_element(By.CSS_SELECTOR, ".stage-duration").text)
        assert seconds >= 0 and row.find_element(By.CSS_SELECTOR, "svg.stage-bar rect")


def test_live_console_then_abort_from_the_page(
    logged_in: WebDriver, server: EmbeddedServer, agent: Agent
) -> None:
    task_id = create_task(
        server, "ticks", {"diff": TICKS_SCRIPT, "entry_point": "t.py"}, queue=QUEUE
    )
    wait(logged_in, lambda d: "tick 1" in console_text(server, task_id), timeout=120)
    logged_in.get(f"{server.url}/tasks/{task_id}/console")
    wait(logged_in, lambda d: "tick" in _text(d, "#console"))
    shown = [int(n) for n in re.findall(r"tick (\d+)", _text(logged_in, "#console"))]
    # a line printed after the page opened arrives over the live stream, without a reload
    later = f"tick {max(shown) + 3}"
    wait(logged_in, lambda d: later in _text(d, "#console"), timeout=20)
    logged_in.find_element(By.CSS_SELECTOR, "[data-action=abort]").click()
    wait(logged_in, ec.url_contains("msg=abort"))
    doc = wait_final(server, task_id, timeout=60)
    assert doc["status"] == "stopped"


def test_task_strings_are_shown_as_text_and_run_no_script(
    logged_in: WebDriver, server: EmbeddedServer
) -> None:
    params = {"Args": {XSS: {"section": "Args", "name": XSS, "value": XSS}}}
    task_id = api_call(
        server, "tasks.create", {"name": XSS, "type": "training", "hyperparams": params}
    )["id"]
    lines = [
        {"task": task_id, "type": "log", "msg": f"{XSS} <script>document.title='pwned'</script>"}
    ]
    api_call(server, "events.add_batch", {"requests": lines})
    logged_in.get(f"{server.url}/tasks?name={XSS[:4]}")
    assert XSS in _text(logged_in, "#task-rows")
    _no_script_ran(logged_in)
    logged_in.get(f"{server.url}/tasks/{task_id}/configuration")
    assert _text(logged_in, "#task-name") == XSS
    inputs = logged_in.find_elements(By.CSS_SELECTOR, "table.params input")
    values = {i.get_attribute("name"): i.get_attribute("value") for i in inputs}
    assert values == {f"Args/{XSS}": XSS}
    _no_script_ran(logged_in)
    logged_in.get(f"{server.url}/tasks/{task_id}/console")
    wait(logged_in, lambda d: "<script>" in _text(d, "#console"))
    assert not logged_in.find_elements(By.CSS_SELECTOR, "#console img, #console script")
    _no_script_ran(logged_in)


def test_state_change_without_csrf_token_is_refused(
    logged_in: WebDriver, server: EmbeddedServer
) -> None:
    task_id = api_call(server, "tasks.create", {"name": "keep me", "type": "training"})["id"]
    client = session_client(logged_in, server)
    for form in ({}, {"csrf": "forged"}):
        reply = client.post(f"/tasks/{task_id}/action/archive", data=form)
        assert reply.status_code == 403, reply.text
    assert "archived" not in task_doc(server, task_id)["system_tags"]
    logged_in.get(f"{server.url}/tasks/{task_id}/info")
    logged_in.find_element(By.CSS_SELECTOR, "[data-action=archive]").click()
    wait(logged_in, ec.url_contains("msg=archive"))
    assert "archived" in task_doc(server, task_id)["system_tags"]


def test_compare_overlays_scalars_and_diffs_packages(
    logged_in: WebDriver, server: EmbeddedServer
) -> None:
    ids = []
    for name, extra in (("base run", ""), ("torch run", "torch==2.1\n")):
        body = {"name": name, "script": {"requirements": {"pip": "numpy\n" + extra}}}
        ids.append(api_call(server, "tasks.create", body)["id"])
        loss = [
            {"task": ids[-1], "type": "training_stats_scalar", "metric": "loss", "variant": "t",
             "iter": i, "value": len(ids) * i}
            for i in range(20)
        ]  # fmt: skip
        api_call(server, "events.add_batch", {"requests": loss})
    logged_in.get(f"{server.url}/compare?ids={','.join(ids)}")
    chart = ".chart[data-metric=loss]"
    logged_in.execute_script(f"document.querySelector('{chart}').scrollIntoView()")
    wait(logged_in, ec.presence_of_element_located((By.CSS_SELECTOR, f"{chart} canvas")))
    labels = logged_in.find_elements(By.CSS_SELECTOR, f"{chart} .u-series .u-label")
    assert [e.text for e in labels][1:] == ["base run", "torch run"]  # [0]: the x axis
    assert _text(logged_in, ".line-diff pre.diff .add") == "+torch==2.1"


def test_workers_machine_stats_drawn_as_small_charts(
    logged_in: WebDriver, server: EmbeddedServer
) -> None:
    for cpu in ((10.0, 30.0), (40.0, 60.0), (70.0, 90.0)):
        stats = {"cpu_usage": list(cpu), "memory_used": 2048.0, "gpu_usage": [55.0]}
        api_call(server, "workers.status_report", {"worker": "stats-box", "machine_stats": stats})
    api_call(server, "workers.status_report", {"worker": "no-gpu-box", "machine_stats": {}})
    logged_in.get(f"{server.url}/queues")
    row = "tr[data-worker=stats-box] .machine-chart"
    for series in ("cpu", "memory", "gpu"):
        wait(logged_in, ec.presence_of_element_located(
            (By.CSS_SELECTOR, f"{row}[data-series={series}] canvas")))  # fmt: skip
    holder = logged_in.find_element(By.CSS_SELECTOR, "tr[data-worker=stats-box] .machine-charts")
    history = json.loads(str(holder.get_attribute("data-history")))
    assert history["cpu"] == [20.0, 50.0, 80.0]  # the mean over the CPUs, oldest first
    assert history["memory"] == [2048.0] * 3 and history["gpu"] == [55.0] * 3
    bare = "tr[data-worker=no-gpu-box] .machine-chart"
    assert not logged_in.find_elements(By.CSS_SELECTOR, f"{bare} canvas")
