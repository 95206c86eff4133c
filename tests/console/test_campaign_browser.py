"""A campaign from the console in headless Chromium, start to finish: a support agent makes a draft,
uploads a file with a bad line and reads the report, uploads the fixed file and submits it; an
approver (a second person) reads the frozen snapshot and approves it; the page then follows the
runner's progress without a reload. Every page is checked with axe-core (no serious or critical
violation) and must fit 360 px; screenshots at desktop and 360 px width go to CONSOLE_SCREENSHOTS
(docs/console for the committed ones), else to a temporary folder."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import Select

from service.kit.db.engine import transaction
from tests.conftest import import_codes_for
from tests.console.browser import DESKTOP, new_browser, remove
from tests.console.helpers import PASSWORD
from tests.console.scenario import audit_rows
from tests.harness.live import live_api

pytestmark = pytest.mark.browser

AXE = (Path(__file__).parents[1] / "vendor" / "axe-core" / "axe.min.js").read_text()
NARROW = (360, 780)
APPROVER = "approver@operator.kz"
PHONES = [f"+7701{n:07d}" for n in range(3000, 3100)]


@pytest.fixture(scope="module")
def server(services):
    with live_api(pool_size=4) as base:
        yield base


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    shots = os.environ.get("CONSOLE_SCREENSHOTS")
    chrome, work = new_browser(server, Path(shots) if shots else tmp_path_factory.mktemp("campaign-shots"))
    yield chrome
    chrome.quit()
    remove(work)


def _metrics(browser, size: tuple[int, int]) -> None:
    browser.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size == NARROW},
    )


def _axe(browser) -> None:
    browser.driver.execute_script(AXE)
    violations = browser.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then("
        "  r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        "    nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))),"
        "  e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
    )
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert bad == [], json.dumps(bad, ensure_ascii=False, indent=1)


def check(browser, name: str) -> None:
    """axe-core at both widths, nothing wider than 360 px, and the screenshots."""
    browser.shots.mkdir(parents=True, exist_ok=True)
    try:
        for label, size in (("phone", NARROW), ("desktop", DESKTOP)):
            _metrics(browser, size)
            time.sleep(0.3)
            _axe(browser)
            if size == NARROW:
                wide = browser.driver.execute_script("return document.documentElement.scrollWidth")
                assert wide <= NARROW[0], f"{name} is {wide} px wide at 360 px"
            path = browser.shots / f"{name}-{label}.png"
            browser._capture(path, size[0], size[1], mobile=size == NARROW)
            assert path.stat().st_size > 5000, f"{path} looks empty"
    finally:
        browser.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.fixture
def approver(staff):
    from service.console.accounts import create_account

    with transaction() as s:
        create_account(s, email=APPROVER, password=PASSWORD, role="approver")
    return APPROVER


def _run_in_background(campaign_id: str) -> threading.Thread:
    """The worker's runner, stepping the campaign until it is done (the test's own process, the same
    database as the server)."""
    from service.campaigns.service import run_step

    def run() -> None:
        for _ in range(200):
            if run_step(uuid.UUID(campaign_id), budget_s=1.0).again_in_ms is None:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_campaign_is_uploaded_submitted_approved_by_a_second_person_and_watched(
    browser, staff, approver, tmp_path
):
    import_codes_for("ARAY-CINEMA-2000", 60)
    bad = tmp_path / "new-year.csv"
    bad.write_bytes(
        (
            "Телефон;Оффер;ref\n"
            + "".join(f"{p};;NY-{i}\n" for i, p in enumerate(PHONES[:59]))
            + "7.70123E+10;;NY-59\n"
        ).encode("cp1251")
    )
    good = tmp_path / "new-year-fixed.csv"
    good.write_bytes(
        ("Телефон;Оффер;ref\n" + "".join(f"{p};;NY-{i}\n" for i, p in enumerate(PHONES[:60]))).encode(
            "cp1251"
        )
    )

    # a support agent: a draft, a file with a bad line, its report, the fixed file, submitted
    browser.sign_in(staff.support, PASSWORD)
    browser.open("/console/campaigns")
    browser.wait_for("#create-form")
    check(browser, "campaign-new")
    browser.type("#camp-name", "Новый год 2027")
    browser.type("#camp-rate", "2")
    Select(browser.find("#camp-program")).select_by_value("mobile-bonus")
    Select(browser.find("#camp-tariff")).select_by_value("basic")
    Select(browser.find("#camp-offer")).select_by_value("cinema-2000")
    browser.click("#camp-create")
    browser.wait_for("#campaign-file")
    campaign_id = browser.driver.current_url.rsplit("/", 1)[1].split("?")[0]
    browser.find("#campaign-file").send_keys(str(bad))
    browser.click("#campaign-upload")
    browser.wait_for("#report")
    assert browser.text("#file-encoding") == "windows-1251" and browser.text("#file-separator") == ";"
    assert "61" in browser.text("#report tbody tr:first-child")  # the bad line, by its number
    assert browser.find("#submit").get_attribute("disabled") is not None
    check(browser, "campaign-report")

    browser.find("#campaign-file").send_keys(str(good))
    browser.click("#campaign-upload")
    browser.wait_for("#report-clean")
    browser.click("#submit")
    browser.wait_for("#snapshot")
    assert "k-submitted" in browser.find("#campaign-status").get_attribute("class")
    assert not browser.all("#approve")  # the submitter has no approve button
    browser.click("#sign-out")
    browser.wait_for("#email")

    # the approver: the list, the frozen snapshot, approve
    browser.sign_in(approver, PASSWORD)
    assert browser.driver.current_url.endswith("/console/campaigns")
    browser.wait_for(f"#campaign-{campaign_id}")
    check(browser, "campaigns")
    browser.open(f"/console/campaigns/{campaign_id}")
    assert browser.text("#snapshot-lines") == "60"
    assert browser.text("#snapshot-total") == "120 000,00 ₸"
    assert len(browser.text("#snapshot-sha")) == 64
    check(browser, "campaign-approve")
    browser.click("#approve")
    browser.wait_for("#flash")
    assert "k-approved" in browser.find("#campaign-status").get_attribute("class")
    assert browser.all("#refreshing")

    # the runner works; the page follows it without a reload
    runner = _run_in_background(campaign_id)
    marker = browser.driver.execute_script("window.notReloaded = true; return true")
    browser.wait(
        lambda: int(browser.text("#lines-done").replace(" ", "")) > 0,
        timeout=20,
        what="the progress to show done lines",
    )
    assert browser.text("#progress-status") in ("выполняется", "завершена")
    check(browser, "campaign-progress")
    browser.wait(
        lambda: browser.text("#lines-done") == "60", timeout=120, what="the campaign to be done on the page"
    )
    assert marker and browser.driver.execute_script("return window.notReloaded === true")
    runner.join(timeout=30)
    browser.wait(
        lambda: "k-done" in browser.find("#campaign-status").get_attribute("class"),
        timeout=15,
        what="the page's status to say done (the poll swaps the heading's badge too)",
    )
    assert not browser.all("#refreshing")  # a done campaign is not polled any more
    assert browser.driver.execute_script("return window.notReloaded === true")
    browser.wait_for("#results-csv")
    check(browser, "campaign-done")

    actions = [(r["email"], r["action"]) for r in audit_rows() if r["action"].startswith("campaign_")]
    assert actions == [
        (staff.support, "campaign_create"),
        (staff.support, "campaign_upload"),
        (staff.support, "campaign_upload"),
        (staff.support, "campaign_submit"),
        (approver, "campaign_approve"),
    ]
