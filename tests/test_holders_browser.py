"""The holders' pages in a real browser: headless Chromium against the app served by uvicorn, opened
from the link of the SMS as the file provider wrote it, at phone width (360 px) and at desktop width.
axe-core (vendored under tests/vendor/axe-core) checks every page: no serious or critical violation.
Screenshots of each page at both widths go to HOLDER_SCREENSHOTS (docs/holder for the committed
ones), else to a temporary folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import import_codes_for, post_redemption
from tests.console.browser import new_browser, remove
from tests.console.scenario import send_sms
from tests.harness.live import free_port, live_api
from tests.test_cards import issue_card
from tests.test_holders import deliver_notices

pytestmark = pytest.mark.browser

AXE = (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text()
PHONE = (360, 780)
DESKTOP = (1280, 900)
TOKEN_LIMIT = 1000  # the test server's page limits, per token and per address, a minute
SHOTS = os.environ.get("HOLDER_SCREENSHOTS")  # unset: a temporary folder


@pytest.fixture(scope="module")
def server(services):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        from service.kit.config import reset_settings_cache

        patch.setenv("PUBLIC_URL", base)  # the links this process renders into SMS point at the server
        reset_settings_cache()
        with live_api(
            pool_size=4,
            port=port,
            PUBLIC_URL=base,
            HOLDER_RATE_PER_TOKEN=str(TOKEN_LIMIT),
            HOLDER_RATE_PER_ADDRESS=str(TOKEN_LIMIT),
        ):
            yield base
    reset_settings_cache()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    shots = Path(SHOTS) if SHOTS else tmp_path_factory.mktemp("holder-shots")
    chrome, work = new_browser(server, shots)
    yield chrome
    chrome.quit()
    remove(work)


def width(browser, size: tuple[int, int]) -> None:
    browser.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size == PHONE},
    )


def axe(browser) -> None:
    """axe-core on the page as it is: no serious or critical violation."""
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


def shoot(browser, name: str, keep: tuple[int, int]) -> None:
    """The page at both widths (each as tall as the page), then back to the width the test runs at."""
    browser.shots.mkdir(parents=True, exist_ok=True)
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        path = browser.shots / f"{name}-{label}.png"
        browser._capture(path, size[0], size[1], mobile=size == PHONE)
        assert path.stat().st_size > 5000, f"{path} looks empty"
    width(browser, keep)


def check(browser, name: str, keep: tuple[int, int]) -> None:
    axe(browser)
    shoot(browser, name, keep)


def link_in_sms(folder: Path, server: str) -> str:
    """The reward page's path, from the last reward SMS the file provider wrote."""
    lines = [json.loads(line) for line in (folder / "sms.jsonl").read_text().splitlines()]
    found = re.search(re.escape(server) + r"(/r/[0-9A-Za-z]{22})", lines[-1]["text"])
    assert found, lines[-1]["text"]
    return found.group(1)


def otp_in_sms(folder: Path, server: str) -> str:
    host = server.split("://", 1)[1].split(":", 1)[0]
    (sms,) = [s for s in deliver_notices(folder) if "#" in s["text"]][-1:]
    last = sms["text"].splitlines()[-1]
    assert re.fullmatch(rf"@{re.escape(host)} #\d{{6}}", last), sms["text"]
    return last.rsplit("#", 1)[1]


def test_a_holder_opens_the_sms_link_and_shows_the_code_with_its_qr(browser, server, client, keys, tmp_path):
    import_codes_for("ARAY-CINEMA-2000", 3)
    made = post_redemption(client, keys, locale="ru").json()
    send_sms(made["id"], tmp_path)
    width(browser, PHONE)
    browser.driver.delete_all_cookies()
    browser.open(link_in_sms(tmp_path, server))
    browser.wait_for("#show")
    assert browser.driver.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
    check(browser, "code", PHONE)
    browser.click("#show")
    code = browser.wait_for("#revealed-code").text
    assert code.endswith(made["reward"]["last4"])
    qr = browser.find("#revealed-barcode")
    assert browser.driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 100", qr
    )
    browser.wait(lambda: browser.find("[data-announce]").get_attribute("textContent").endswith(code))
    check(browser, "code-shown", PHONE)


def test_a_holder_exchanges_part_of_a_card_online_with_the_code_from_the_sms(
    browser, server, client, keys, tmp_path
):
    import_codes_for("ARAY-CERT-1000", 5)
    import_codes_for("KITAP-CERT-2500", 5)
    import_codes_for("DALA-CERT-5000", 5)
    card = issue_card(client, keys, locale="ru")
    send_sms(card.redemption_id, tmp_path)
    link = link_in_sms(tmp_path, server)
    width(browser, DESKTOP)
    browser.driver.delete_all_cookies()
    browser.open(link + "?lang=ru")
    assert browser.text("#balance") == "5 000 ₸"
    check(browser, "card", DESKTOP)
    browser.click("#exchange-ARAY-CERT-1000")
    field = browser.wait_for("#otp-code")
    assert (
        field.get_attribute("autocomplete") == "one-time-code"
        and field.get_attribute("inputmode") == "numeric"
    )
    check(browser, "otp", DESKTOP)
    browser.type("#otp-code", otp_in_sms(tmp_path, server))
    browser.click("#confirm")
    browser.wait_for("#done")
    assert browser.text("#new-balance") == "Остаток на карте: 4 000 ₸"
    assert browser.find("#certificate-barcode").is_displayed()
    check(browser, "exchanged", DESKTOP)
    browser.open(link)
    assert browser.text("#balance") == "4 000 ₸" and "на сайте" in browser.text("#history")
    browser.find("#history form button").click()
    browser.wait_for("#history-certificate-code")
    check(browser, "history", DESKTOP)


def test_a_wrong_code_three_times_ends_the_attempt_and_spends_nothing(
    browser, server, client, keys, tmp_path
):
    import_codes_for("KITAP-CERT-2500", 5)
    card = issue_card(client, keys, locale="en")
    send_sms(card.redemption_id, tmp_path)
    width(browser, PHONE)
    browser.driver.delete_all_cookies()
    browser.open(link_in_sms(tmp_path, server) + "?lang=en")
    browser.click("#exchange-KITAP-CERT-2500")
    browser.wait_for("#otp-code")
    right = otp_in_sms(tmp_path, server)
    wrong = "000000" if right != "000000" else "999999"
    for left in (2, 1):
        browser.type("#otp-code", wrong)
        browser.click("#confirm")
        browser.wait(lambda left=left: f"Tries left: {left}" in browser.text("#notice"))
        if left == 2:
            check(browser, "otp-wrong", PHONE)
    browser.type("#otp-code", wrong)
    browser.click("#confirm")
    browser.wait(lambda: "wrong 3 times" in browser.text("#notice"))
    assert browser.all("#otp-code") == []
    check(browser, "otp-used-up", PHONE)
    assert browser.text("#balance") == "5 000 ₸"


def test_a_card_given_as_a_present_opens_by_its_number_and_pin(browser, server, client, keys):
    card = issue_card(client, keys)
    width(browser, PHONE)
    browser.driver.delete_all_cookies()
    browser.open("/card?lang=kk")
    browser.wait_for("#card-number")
    check(browser, "card-entry", PHONE)
    browser.type("#card-number", card.number)
    browser.type("#card-pin", card.pin)
    browser.click("#open-card")
    browser.wait_for("#balance")
    assert (
        "/r/" in browser.driver.current_url
        and browser.driver.execute_script("return document.documentElement.lang") == "kk"
    )


def test_the_not_found_page_is_accessible_too(browser, server, client, keys):
    width(browser, PHONE)
    browser.open("/r/" + "0" * 22)
    browser.wait_for("#message-title")
    check(browser, "not-found", PHONE)


def fits_a_phone(browser) -> None:
    assert browser.driver.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]


def test_the_expired_page_is_accessible_and_fits_a_phone(browser, server, client, keys):
    from sqlalchemy import text

    from service.kit.db.engine import transaction

    import_codes_for("ARAY-CINEMA-2000", 1)
    made = post_redemption(client, keys, locale="ru").json()
    with transaction() as s:
        s.execute(
            text("UPDATE redemptions SET reward_expires_at = now() - interval '1 day' WHERE id = :id"),
            {"id": made["id"]},
        )
    width(browser, PHONE)
    browser.open(made["reward_url"].removeprefix(server))
    browser.wait_for("#message-title")
    fits_a_phone(browser)
    check(browser, "expired", PHONE)


def test_a_cards_page_and_a_wrong_pin_at_card_entry_are_accessible_and_fit_a_phone(
    browser, server, client, keys
):
    card = issue_card(client, keys)
    width(browser, PHONE)
    browser.driver.delete_all_cookies()
    browser.open("/card?lang=en")
    browser.wait_for("#card-number")
    browser.type("#card-number", card.number)
    browser.type("#card-pin", "0000" if card.pin != "0000" else "1111")
    browser.click("#open-card")
    assert "Tries left" in browser.wait_for("#notice").text
    fits_a_phone(browser)
    check(browser, "card-entry-wrong-pin", PHONE)
    browser.type("#card-number", card.number)
    browser.type("#card-pin", card.pin)
    browser.click("#open-card")
    browser.wait_for("#balance")
    fits_a_phone(browser)
    check(browser, "card", PHONE)


def test_the_over_the_limit_page_is_accessible_and_fits_a_phone(browser, server, client, keys):
    import httpx

    from tests.test_holders import flush_limits

    import_codes_for("ARAY-CINEMA-2000", 1)
    path = post_redemption(client, keys, locale="ru").json()["reward_url"].removeprefix(server)
    # The address's count holds the pages the tests before this one opened in this minute.
    flush_limits()
    try:
        # The limits are counted in fixed minute windows, and 1,001 pages on a loaded machine may cross
        # a minute's end (the count starts again): within two windows' worth a 429 must come, and not
        # before the limit was used up.
        with httpx.Client(base_url=server) as http:
            answers = []
            while len(answers) <= 2 * TOKEN_LIMIT and 429 not in answers:
                answers.append(http.get(path).status_code)
        assert answers[-1] == 429 and len(answers) > TOKEN_LIMIT
        width(browser, PHONE)
        browser.open(path)
        browser.wait_for("#message-title")
        fits_a_phone(browser)
        check(browser, "over-the-limit", PHONE)
    finally:
        flush_limits()


def test_two_clients_exchanging_one_card_at_once_never_overspend_it(server, client, keys, tmp_path):
    """Two browsers' worth of HTTP (each its own cookies and forms) confirm their one-time codes for
    the same 5 000 card at the same moment, against the live server: one 5 000 certificate fits."""
    import threading

    import httpx
    from sqlalchemy import text

    from service.kit.db.engine import new_session

    import_codes_for("DALA-CERT-5000", 5)
    card = issue_card(client, keys, locale="ru")
    send_sms(card.redemption_id, tmp_path)
    link = link_in_sms(tmp_path, server)
    pages = []
    for _ in range(2):
        http = httpx.Client(base_url=server, timeout=30)
        page = http.get(link)
        form = re.search(r'name="form" value="([^"]+)"', page.text).group(1)
        asked = http.post(link + "/exchange", data={"sku": "DALA-CERT-5000", "form": form})
        action = re.search(r'action="(/r/[^"]+/exchange/[0-9a-f\-]+)"', asked.text).group(1)
        pages.append((http, action, form, otp_in_sms(tmp_path, server)))
    start = threading.Barrier(2)
    answers: list[str] = []

    def confirm(http, action, form, code) -> None:
        start.wait()
        answers.append(http.post(action, data={"code": code, "form": form}).text)

    threads = [threading.Thread(target=confirm, args=p) for p in pages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done = [a for a in answers if 'id="done"' in a]
    assert len(answers) == 2 and len(done) == 1
    with new_session() as s:
        balance = s.execute(
            text("SELECT balance_minor FROM cards WHERE id = :id"), {"id": card.card_id}
        ).scalar_one()
        spent = s.execute(
            text("SELECT sum(amount_minor) FROM exchanges WHERE card_id = :id"), {"id": card.card_id}
        ).scalar_one()
    assert (balance, spent) == (0, 500000)
    for http, *_ in pages:
        http.close()
