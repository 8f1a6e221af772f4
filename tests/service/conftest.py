"""The tiny champion (``registry``, tests/conftest.py) served by the real bentoml, and a real
headless Chromium for the pages."""

from __future__ import annotations

import shutil

import pytest

from tests.utils.server import running_service, service_env


@pytest.fixture(scope="module")
def service_url(registry, tmp_path_factory):
    with running_service(service_env(registry), tmp_path_factory.mktemp("logs") / "serve.log") as url:
        yield url


@pytest.fixture
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()
