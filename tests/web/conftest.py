"""Browser-test fixtures: one server, one `conveyor daemon` and one headless chromium (Debian's
chromium + chromium-driver, driven by Selenium) per module."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from agent.server.embedded import EmbeddedServer
from tests.integration.daemon.support import Agent, start_agent

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
QUEUE = "web"
WAIT = 30.0


def _browser_missing() -> str:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "chromium and chromium-driver are not installed (scripts/test installs them as root)"
    return ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(tmp_path_factory.mktemp("web-server") / "server.db") as srv:
        yield srv


@pytest.fixture(scope="module")
def agent(server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    base = tmp_path_factory.mktemp("web-agent")
    started = start_agent(server, base / "data", base / "cache", QUEUE)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path_factory.mktemp("chromium"))
    for flag in (
        "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def wait(driver: WebDriver, condition: Callable[[Any], Any], timeout: float = WAIT) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def log_in(driver: WebDriver, server: EmbeddedServer) -> None:
    """Log in through the login form (the session cookie then serves every page)."""
    driver.get(f"{server.url}/login")
    driver.find_element(By.NAME, "access_key").send_keys(server.credentials.access_key)
    driver.find_element(By.NAME, "secret_key").send_keys(server.credentials.secret_key)
    driver.find_element(By.CSS_SELECTOR, "[data-action=login]").click()
    wait(driver, ec.url_contains("/tasks"))


@pytest.fixture(scope="module")
def logged_in(browser: WebDriver, server: EmbeddedServer) -> WebDriver:
    log_in(browser, server)
    return browser


def session_client(driver: WebDriver, server: EmbeddedServer) -> httpx.Client:
    """An HTTP client carrying the browser's session cookie (and nothing else)."""
    cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    return httpx.Client(base_url=server.url, cookies=cookies, timeout=WAIT)


def scratch(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    return Path(tmp_path_factory.mktemp(name))
