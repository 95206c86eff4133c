"""/docs (Swagger UI) and /redoc (ReDoc) come from files the service ships, with the console's security
headers (a CSP that allows this origin only): no CDN, no third-party script (issue 29, 7)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from service.console.web import SECURITY_HEADERS

PAGES = ["/docs", "/redoc"]


@pytest.mark.parametrize("path", PAGES)
def test_the_api_docs_pages_name_no_external_url(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert not re.search(r"(https?:)?//", response.text), re.findall(r"\S*//\S*", response.text)


@pytest.mark.parametrize("path", PAGES)
def test_the_api_docs_pages_carry_the_consoles_security_headers(client, path):
    headers = client.get(path).headers
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name


@pytest.mark.parametrize("path", PAGES)
def test_every_script_and_stylesheet_of_the_pages_is_served_by_the_service(client, path):
    page = client.get(path).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(a.endswith(".js") for a in assets)
    assert client.get("/docs/static/../__init__.py").status_code == 404  # the static folder only
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_vendored_files_come_with_their_licences():
    root = Path(__file__).parent.parent / "service" / "kit" / "http" / "apidocs" / "static" / "vendor"
    for name in ("swagger-ui", "redoc"):
        assert (
            "MIT License" in (root / name / "LICENSE").read_text()
            or "Apache" in (root / name / "LICENSE").read_text()
        )
        assert (root / name / "SOURCE").read_text().strip()


@pytest.mark.browser
@pytest.mark.parametrize(("path", "drawn"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_the_api_docs_pages_draw_under_their_csp(live_base, browser_driver, path, drawn, tmp_path):
    """In Chromium: the page draws the API's title, every resource it loaded came from the service,
    and no script was refused by the CSP (ReDoc's Redocly logo, an image on a CDN, is refused: the
    CSP doing its work, and ReDoc leaves the logo out)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser_driver.get(live_base + path)
    WebDriverWait(browser_driver, 30).until(
        expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, drawn), "Reward fulfillment")
    )
    shot = Path(os.environ.get("API_DOCS_SCREENSHOTS", tmp_path)) / f"{path.strip('/')}.png"
    browser_driver.save_screenshot(str(shot))
    logs = browser_driver.get_log("browser")
    csp = [e["message"] for e in logs if "Content Security Policy" in e["message"]]
    refused_images = {m.split("'")[1] for m in csp if "Loading the image" in m}
    assert not [m for m in csp if "Loading the image" not in m], csp  # no script, style, worker, fetch
    loaded = browser_driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(live_base + "/") for url in set(loaded) - refused_images), loaded


@pytest.fixture
def live_base(db):
    from tests.harness.live import live_api

    with live_api(pool_size=2) as base:
        yield base


@pytest.fixture
def browser_driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.console.browser import CHROMEDRIVER, CHROMIUM, FLAGS

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
