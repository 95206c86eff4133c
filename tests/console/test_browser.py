"""The staff console in a real browser: headless Chromium against the app served by uvicorn on a
loopback port. Each test is one person's task, start to finish, and leaves screenshots of the pages
it went through at desktop and phone width (see tests/console/browser.py)."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from service.console.i18n import DEFAULT_ZONE
from service.kit.db.engine import new_session
from tests.conftest import import_codes_for, post_redemption, redemption_body
from tests.console.browser import new_browser, remove
from tests.console.helpers import PASSWORD
from tests.console.scenario import PHONE, audit_rows, send_sms, sms_rows
from tests.finance_helpers import redeem_at
from tests.harness.live import live_api
from tests.test_cards import issue_card

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(services):
    with live_api(pool_size=4) as base:
        yield base


@pytest.fixture(scope="module")
def browser(server):
    chrome, work = new_browser(server)
    yield chrome
    chrome.quit()
    remove(work)


@pytest.fixture
def subscriber(client, keys, tmp_path):
    """Three rewards of one subscriber: a delivered code, a code not yet sent, and a gift card."""
    import_codes_for("ARAY-CINEMA-2000", 20)
    import_codes_for("ARAY-CERT-1000", 10)
    delivered = post_redemption(client, keys, msisdn=PHONE).json()["id"]
    send_sms(delivered, tmp_path)
    waiting = post_redemption(client, keys, msisdn="+7 701 123 45 67").json()["id"]
    card = issue_card(client, keys, msisdn=PHONE)
    send_sms(card.redemption_id, tmp_path)
    return {"delivered": delivered, "waiting": waiting, "card": card}


def test_sign_in_page(browser, staff):
    browser.driver.delete_all_cookies()
    browser.open("/console/subscriber")
    browser.wait(lambda: "/console/login" in browser.driver.current_url, what="the redirect to sign-in")
    browser.screenshot("login")
    browser.type("#email", staff.support)
    browser.type("#password", PASSWORD)
    browser.click("#sign-in")
    browser.wait_for("#phone")
    assert browser.driver.current_url.endswith("/console/subscriber")


def test_an_agent_finds_a_subscriber_and_resends_an_sms(browser, staff, subscriber, tmp_path):
    browser.sign_in(staff.support, PASSWORD)
    browser.open("/console/subscriber")
    browser.type("#phone", "8 (701) 123-45-67")
    browser.click("#search")
    table = browser.wait_for("#redemptions")
    assert "+77011234567" in browser.text("h2")
    assert len(table.find_elements("css selector", "tbody tr")) == 3
    browser.screenshot("subscriber")

    browser.open(f"/console/redemptions/{subscriber['delivered']}")
    assert len(browser.all("#timeline .sms-attempt")) == 1
    browser.click("#resend")
    browser.wait_for("#flash")
    assert len(browser.all("#timeline .sms-attempt")) == 2  # the resend, queued
    send_sms(subscriber["delivered"], tmp_path, send=1)  # the worker takes it, the provider confirms it
    browser.open(f"/console/redemptions/{subscriber['delivered']}")
    attempts = browser.all("#timeline .sms-attempt")
    assert len(attempts) == 2 and "DELIVRD" in attempts[1].text
    assert sms_rows(subscriber["delivered"]) == [(0, "delivered"), (1, "delivered")]
    assert "…" in browser.text("#masked-phone") or "*" in browser.text("#masked-phone")
    browser.screenshot("redemption")


def test_an_agent_sees_a_sandbox_redemption_marked(browser, staff, client, keys):
    from service.auth.service import create_key
    from service.kit.db.engine import transaction

    with transaction() as s:
        keys.sandbox = create_key(
            s, role="loyalty", name="crm-staging", programs=["mobile-bonus"], sandbox=True
        ).key
    test = post_redemption(client, keys, role="sandbox", msisdn=PHONE).json()["id"]
    browser.sign_in(staff.support, PASSWORD)
    browser.open(f"/console/redemptions/{test}")
    assert browser.find("#sandbox").is_displayed()
    browser.screenshot("redemption-sandbox")


def test_an_agent_sees_why_a_webhook_is_not_delivered_and_when_it_is_tried_next(browser, staff, client, keys):
    from service.events.webhooks import attempt_events
    from tests.harness.delivery import point_webhooks_at
    from tests.test_webhook_failures import _cancelled_event, _closed_url

    point_webhooks_at(_closed_url())
    event_id = _cancelled_event(client, keys)
    attempt_events([event_id])
    attempt_events([event_id])
    with new_session() as s:
        rid = s.execute(
            text("SELECT redemption_id FROM webhook_events WHERE id = :id"), {"id": event_id}
        ).scalar()
    browser.sign_in(staff.support, PASSWORD)
    browser.open(f"/console/redemptions/{rid}")
    attempts = browser.all("#timeline .webhook-attempts li")
    assert len(attempts) == 2
    assert all("ConnectionRefusedError" in a.text and "следующая" in a.text for a in attempts)
    browser.screenshot("redemption-webhook-attempts")


def test_an_agent_cancels_a_redemption_after_confirming(browser, staff, subscriber):
    browser.sign_in(staff.support, PASSWORD)
    browser.open(f"/console/redemptions/{subscriber['waiting']}")
    browser.click("#cancel")
    browser.wait_for("#cancel-confirm")
    browser.click("#cancel-yes")
    browser.wait_for("#flash")
    assert browser.find("#redemption-status").get_attribute("class").endswith("s-cancelled")
    assert [row["action"] for row in audit_rows() if row["action"] == "cancel"] == ["cancel"]


def test_an_agent_blocks_a_card(browser, staff, subscriber):
    browser.sign_in(staff.support, PASSWORD)
    browser.open(f"/console/redemptions/{subscriber['card'].redemption_id}")
    browser.type("#card-reason", "subscriber reported theft")
    browser.click("#block")
    browser.wait_for("#flash")
    assert "c-blocked" in browser.find("#card-status").get_attribute("class")
    assert "subscriber reported theft" in browser.text("#card-events")
    browser.screenshot("card")


def test_an_agent_lifts_a_cards_pin_lock(browser, staff, subscriber):
    from tests.console.test_pages import _lock_for_everyone

    card = subscriber["card"]
    _lock_for_everyone(card)
    browser.sign_in(staff.support, PASSWORD)
    browser.open(f"/console/redemptions/{card.redemption_id}")
    browser.wait_for("#card-lock")
    browser.screenshot("card-locked")
    browser.type("#unlock-reason", "holder called, identity checked")
    browser.click("#unlock")
    browser.wait_for("#flash")
    assert not browser.all("#card-lock")
    assert "holder called, identity checked" in browser.text("#card-events")


def test_a_cashier_verifies_and_exchanges_a_card(browser, staff, subscriber):
    card = subscriber["card"]
    browser.sign_in(staff.partner, PASSWORD)
    assert browser.driver.current_url.endswith("/console/cards")
    browser.type("#card-number", card.number)
    browser.type("#card-pin", card.pin)
    browser.click("#verify")
    browser.wait_for("#verify-result")
    assert browser.text("#card-balance") == "5 000,00 ₸"
    browser.screenshot("card-desk")
    browser.click("button.exchange[data-sku='ARAY-CERT-1000']")
    browser.wait_for("#exchange-result")
    assert browser.text("#balance-before") == "5 000,00 ₸"
    assert browser.text("#balance-after") == "4 000,00 ₸"
    assert browser.text("#certificate-code").startswith("ARAY-CERT-1000-T")
    browser.screenshot("card-desk-exchanged")
    with new_session() as s:
        assert (
            s.execute(text("SELECT balance_minor FROM cards WHERE id = :id"), {"id": card.card_id}).scalar()
            == 400000
        )


def test_a_partner_uploads_codes_and_sees_the_counts(browser, staff, subscriber, tmp_path):
    csv = tmp_path / "codes.csv"
    csv.write_text(
        "code,pin,expires_at\nNEW-CODE-0001,,\nNEW-CODE-0002,,\nNEW-CODE-0001,,\nNEW-CODE-0003,,not-a-date\n"
    )
    browser.sign_in(staff.partner, PASSWORD)
    browser.open("/console/stock")
    assert [row.get_attribute("id") for row in browser.all("#stock tbody tr")] == [
        "sku-ARAY-CERT-1000",
        "sku-ARAY-CINEMA-2000",
    ]
    browser.find("#upload-file").send_keys(str(csv))
    browser.click("#upload-send")
    browser.wait_for("#upload-counts")
    assert (
        browser.text("#count-accepted"),
        browser.text("#count-duplicates"),
        browser.text("#count-rejected"),
    ) == (
        "2",
        "1",
        "1",
    )
    assert browser.find("#upload-progress").get_attribute("value") == "100"
    browser.wait(lambda: browser.text("#sku-ARAY-CERT-1000 .available") == "12", what="the table's new count")
    browser.screenshot("stock")


def test_finance_closes_a_month_and_downloads_the_act(browser, staff, demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 5)
    now = datetime.now(UTC).astimezone(DEFAULT_ZONE)
    last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=10, hour=12)
    redeem_at(last_month)
    redeem_at(last_month.replace(day=11))
    month = f"{last_month:%Y-%m}"
    browser.sign_in(staff.finance, PASSWORD)
    browser.open(f"/console/periods?program=mobile-bonus&month={month}")
    assert browser.text("#total-face") == "4 000,00 ₸"
    browser.click("#close")
    browser.wait_for("#close-confirm")
    browser.screenshot("month-close-confirm")
    browser.click("#close-yes")
    browser.wait_for("#documents")
    assert "p-closed" in browser.find("#period-status").get_attribute("class")
    browser.click("#doc-act-pdf")
    act = browser.downloaded(f"act-mobile-bonus-{month}.pdf")
    assert act.startswith(b"%PDF")
    browser.screenshot("month-close")
    assert [r["action"] for r in audit_rows() if r["action"] == "close_period"] == ["close_period"]


def _recent_history(folder) -> None:
    """An hour of traffic for the dashboard to draw: redemptions of three programs at chosen
    minutes, most SMS delivered a few seconds later, one failed."""
    rng = random.Random(13)
    now = datetime.now(UTC)
    offers = [
        ("mobile-bonus", "cinema-2000", "basic", 2000),
        ("mobile-bonus", "books-5000", "plus", 5000),
        ("home-internet", "cinema-2000", "home-100", 2200),
        ("business", "books-5000", "biz-pro", 4500),
    ]
    for i in range(45):
        program, offer, tariff, points = offers[i % len(offers)]
        at = now - timedelta(minutes=rng.uniform(1, 55))
        rid = redeem_at(at, program=program, offer=offer, tariff=tariff, points=points)
        if i % 9 == 4:
            continue  # still on its way
        send_sms(
            rid,
            folder,
            at=at + timedelta(seconds=rng.uniform(0.5, 2)),
            receipt_after=timedelta(seconds=rng.uniform(2, 9)),
            state="UNDELIV" if i == 7 else "DELIVRD",
        )


def test_the_dashboard_counter_rises_after_a_redemption_through_the_api(
    browser, server, staff, keys, tmp_path
):
    import_codes_for("ARAY-CINEMA-2000", 60)
    import_codes_for("KITAP-BOOKS-5000", 40)
    _recent_history(tmp_path)
    browser.sign_in(staff.admin, PASSWORD)
    browser.open("/console/dashboard")
    browser.wait(lambda: browser.find("#dashboard").get_attribute("data-loaded"), what="the first poll")
    before = int(browser.text("#today-total").replace(" ", ""))
    assert before >= 45
    response = httpx.post(
        server + "/v1/redemptions",
        json=redemption_body(),
        headers={**keys.header("loyalty"), "Idempotency-Key": f"dash-{time.time_ns()}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    browser.wait(
        lambda: int(browser.text("#today-total").replace(" ", "")) == before + 1,
        timeout=15,
        what="the counter to rise without a reload",
    )
    assert browser.find("#per-minute-chart canvas").size["width"] > 100  # uPlot drew the chart
    browser.screenshot("dashboard")


def test_finance_reads_the_audit_log(browser, staff, subscriber, tmp_path):
    browser.sign_in(staff.support, PASSWORD)
    browser.open(f"/console/redemptions/{subscriber['delivered']}")
    browser.click("#resend")
    browser.wait_for("#flash")
    browser.open(f"/console/redemptions/{subscriber['waiting']}")
    browser.click("#cancel")
    browser.wait_for("#cancel-confirm")
    send_sms(subscriber["waiting"], tmp_path)  # meanwhile the provider takes the SMS
    browser.click("#cancel-yes")
    browser.wait_for("#flash-error")  # the code has left: not cancellable
    browser.open(f"/console/redemptions/{subscriber['card'].redemption_id}")
    browser.type("#card-reason", "subscriber lost the phone")
    browser.click("#block")
    browser.wait_for("#flash")
    browser.click("#sign-out")
    browser.wait_for("#email")
    browser.sign_in(staff.finance, PASSWORD)
    browser.open("/console/audit")
    actions = [row.get_attribute("data-action") for row in browser.all("#audit tbody tr")]
    assert actions == ["sign_in", "sign_out", "block", "cancel", "resend", "sign_in"]
    assert "not_cancellable" in browser.text("#audit")
    browser.screenshot("audit")
