"""The console's security rules: no page without a session, CSRF on every form, scopes as in the API
(out of scope is 404), wrong passwords throttled (more in test_sign_in_throttle.py), no full code, PIN
or phone in any page, and an audit row for every action."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.console import accounts, i18n
from service.kit.db.engine import new_session, transaction
from tests.conftest import import_codes_for, post_redemption
from tests.console.helpers import PASSWORD, sign_in, signed_in
from tests.console.scenario import PHONE, audit_rows, send_sms
from tests.test_cards import issue_card

PAGES = [
    "/console/",
    "/console/subscriber",
    "/console/redemptions/01a23aab-a672-751c-8c9b-a4dfafacdd09",
    "/console/stock",
    "/console/cards",
    "/console/periods",
    "/console/periods/close?program=mobile-bonus&month=2026-01",
    "/console/periods/2026-01/documents/act.pdf?program=mobile-bonus",
    "/console/dashboard",
    "/console/dashboard/data",
    "/console/audit",
    "/console/campaigns",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09/progress",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09/report.csv",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09/results?format=xlsx",
]
ACTIONS = [
    "/console/logout",
    "/console/subscriber",
    "/console/redemptions/01a23aab-a672-751c-8c9b-a4dfafacdd09/resend",
    "/console/redemptions/01a23aab-a672-751c-8c9b-a4dfafacdd09/cancel",
    "/console/redemptions/01a23aab-a672-751c-8c9b-a4dfafacdd09/card/block",
    "/console/redemptions/01a23aab-a672-751c-8c9b-a4dfafacdd09/card/unblock",
    "/console/stock/upload",
    "/console/cards/verify",
    "/console/cards/exchange",
    "/console/periods/close",
    "/console/periods/reconcile",
    "/console/campaigns",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09/upload",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09/submit",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09/pause",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09/resume",
    "/console/campaigns/01a23aab-a672-751c-8c9b-a4dfafacdd09/cancel",
]


@pytest.fixture
def rewards(client, keys, tmp_path):
    """A subscriber with a code delivered and a gift card; pools of two partners."""
    import_codes_for("ARAY-CINEMA-2000", 5)
    import_codes_for("ARAY-CERT-1000", 5)
    import_codes_for("KITAP-CERT-2500", 5)
    code = post_redemption(client, keys, msisdn=PHONE).json()["id"]
    send_sms(code, tmp_path)
    card = issue_card(client, keys, msisdn=PHONE)
    return {"code": code, "card": card}


def test_every_page_and_action_without_a_session_sends_the_browser_to_sign_in(client, staff):
    for path in PAGES:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login?next="), path
    for path in ACTIONS:
        response = client.post(
            path,
            data={
                "csrf_token": "x",
                "sku": "X",
                "action_key": "x" * 16,
                "program": "p",
                "month": "2026-01",
                "partner": "q",
            },
            follow_redirects=False,
        )
        assert response.status_code == 303 and "/console/login" in response.headers["location"], path


def test_an_htmx_request_without_a_session_is_told_to_load_the_sign_in_page(client, staff):
    response = client.post("/console/cards/verify", headers={"HX-Request": "true"}, follow_redirects=False)
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/console/login")


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(client, staff):
    assert sign_in(client, staff.support, next_path="/console/stock").headers["location"] == "/console/stock"
    client.cookies.clear()
    assert (
        sign_in(client, staff.support, next_path="//evil.example/").headers["location"]
        == "/console/subscriber"
    )


def test_the_session_cookie_is_http_only_same_site_and_secure_over_tls(app, db, staff):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="https://testserver") as tls:
        cookie = sign_in(tls, staff.support).headers["set-cookie"]
    assert "rewards_console=" in cookie
    assert (
        "HttpOnly" in cookie
        and "SameSite=strict" in cookie
        and "Secure" in cookie
        and "Path=/console" in cookie
    )


def test_the_session_cookie_is_not_marked_secure_over_plain_http(client, staff):
    cookie = sign_in(client, staff.support).headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" not in cookie


def test_a_form_without_its_csrf_token_changes_nothing(client, staff, rewards):
    signed_in(client, staff.support)
    for token in (None, "forged"):
        data = {"csrf_token": token} if token else {}
        response = client.post(f"/console/redemptions/{rewards['code']}/resend", data=data)
        assert response.status_code == 403
    with new_session() as s:
        assert s.execute(text("SELECT resend_count FROM redemptions")).scalars().all() == [0, 0]
        assert s.execute(text("SELECT count(*) FROM outbox WHERE payload->>'send' = '1'")).scalar() == 0


def test_every_action_refuses_a_forged_csrf_token_from_a_person_allowed_to_use_it(client, staff):
    may_use = {"/console/stock/upload": staff.partner, "/console/cards/verify": staff.partner}
    may_use |= {"/console/cards/exchange": staff.partner, "/console/periods/close": staff.finance}
    may_use |= {"/console/periods/reconcile": staff.finance}
    for path in ACTIONS:
        client.cookies.clear()
        signed_in(client, may_use.get(path, staff.support))
        form = {"sku": "X", "action_key": "x" * 16, "program": "p", "month": "2026-01", "partner": "q"}
        response = client.post(path, data={"csrf_token": "forged", **form}, follow_redirects=False)
        assert response.status_code == 403, path
        assert i18n.translate("ru", "login.csrf") in response.text, path


def test_the_csrf_token_may_come_in_the_htmx_header(client, staff, rewards):
    token = signed_in(client, staff.support)
    response = client.post(
        f"/console/redemptions/{rewards['code']}/resend",
        headers={"X-CSRF-Token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303


def test_the_sign_in_form_needs_its_csrf_token(client, staff):
    client.get("/console/login")
    response = client.post(
        "/console/login",
        data={"email": staff.support, "password": PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 403 and "rewards_console=" not in response.headers.get("set-cookie", "")


def test_five_wrong_passwords_hold_that_place_back_even_against_the_right_one(client, staff):
    """More in test_sign_in_throttle.py: the owner elsewhere is not held back."""
    for _ in range(5):
        response = sign_in(client, staff.support, password="wrong password!")
        assert response.status_code == 200 and "login-error" in response.text
    refused = sign_in(client, staff.support)
    assert refused.status_code == 200 and "rewards_console=" not in refused.headers.get("set-cookie", "")
    outcomes = [r["outcome"] for r in audit_rows() if r["action"] == "sign_in"]
    assert outcomes == ["wrong_password"] * 5 + ["throttled"]


def test_the_first_wait_ends_after_a_minute(staff):
    now = datetime.now(UTC)
    for _ in range(5):  # each attempt commits its count, as the sign-in route does
        with transaction() as s:
            try:
                accounts.sign_in(s, staff.support, "wrong password!", address=None, now=now)
            except accounts.SignInRefused:
                pass
    with transaction() as s, pytest.raises(accounts.SignInRefused) as held:
        accounts.sign_in(s, staff.support, PASSWORD, address=None, now=now + timedelta(seconds=59))
    assert held.value.reason == "throttled" and held.value.locked_until == now + timedelta(minutes=1)
    with transaction() as s:
        assert accounts.sign_in(s, staff.support, PASSWORD, address=None, now=now + timedelta(seconds=61))


def test_an_unknown_email_is_refused_like_a_wrong_password(client, staff):
    response = sign_in(client, "nobody@operator.kz")
    assert "login-error" in response.text
    assert audit_rows()[-1] | {} == audit_rows()[-1] and audit_rows()[-1]["outcome"] == "wrong_password"


def test_a_session_unused_for_the_idle_time_ends(staff):
    now = datetime.now(UTC)
    with transaction() as s:
        signed = accounts.sign_in(s, staff.support, PASSWORD, address=None, now=now)
    with transaction() as s:
        assert accounts.resume(s, signed.token, idle=timedelta(minutes=30), now=now + timedelta(minutes=29))
    with transaction() as s:
        assert (
            accounts.resume(s, signed.token, idle=timedelta(minutes=30), now=now + timedelta(minutes=61))
            is None
        )


def test_the_dashboards_polling_does_not_keep_a_session_alive(staff):
    now = datetime.now(UTC)
    with transaction() as s:
        signed = accounts.sign_in(s, staff.support, PASSWORD, address=None, now=now)
    idle = timedelta(minutes=30)
    with transaction() as s:  # a poll every few seconds for 25 minutes touches nothing
        assert accounts.resume(s, signed.token, idle=idle, now=now + timedelta(minutes=25), touch=False)
    with transaction() as s:
        assert (
            accounts.resume(s, signed.token, idle=idle, now=now + timedelta(minutes=31), touch=False) is None
        )


def _last_seen_moved_back(minutes: int) -> datetime:
    """Moves every session's last request `minutes` into the past (past the once-a-minute touch)."""
    with transaction() as s:
        return s.execute(
            text(
                "UPDATE staff_sessions SET last_seen_at = now() - make_interval(mins => :m)"
                " RETURNING last_seen_at"
            ),
            {"m": minutes},
        ).scalar_one()


def _last_seen() -> datetime:
    with new_session() as s:
        return s.execute(text("SELECT last_seen_at FROM staff_sessions")).scalar_one()


def test_a_page_request_touches_the_session(client, staff):
    signed_in(client, staff.support)
    before = _last_seen_moved_back(5)
    assert client.get("/console/dashboard").status_code == 200
    assert _last_seen() > before


def test_the_dashboards_polling_over_http_leaves_the_session_untouched(client, staff):
    signed_in(client, staff.support)
    before = _last_seen_moved_back(5)
    assert client.get("/console/dashboard/data").status_code == 200
    assert _last_seen() == before


def test_signing_out_ends_the_session(client, staff):
    token = signed_in(client, staff.support)
    cookie = client.cookies.get("rewards_console")
    response = client.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.headers["location"] == "/console/login?reason=signed_out"
    client.cookies.set("rewards_console", cookie, path="/console")
    assert client.get("/console/subscriber", follow_redirects=False).status_code == 303


def test_disabling_an_account_ends_its_sessions_at_once(client, staff):
    signed_in(client, staff.support)
    with transaction() as s:
        accounts.disable_account(s, staff.support)
    assert client.get("/console/subscriber", follow_redirects=False).status_code == 303
    assert "login-error" in sign_in(client, staff.support).text


def test_a_page_of_another_role_is_forbidden(client, staff):
    signed_in(client, staff.partner)
    for path in ("/console/subscriber", "/console/periods", "/console/audit"):
        assert client.get(path).status_code == 403, path
    client.cookies.clear()
    signed_in(client, staff.support)
    assert client.get("/console/cards").status_code == 403


def test_another_partners_sku_is_not_found(client, staff, rewards):
    token = signed_in(client, staff.partner)
    upload = client.post(
        "/console/stock/upload",
        data={"csrf_token": token, "sku": "KITAP-CERT-2500"},
        files={"file": ("codes.csv", b"code\nSTOLEN-0001\n", "text/csv")},
    )
    assert upload.status_code == 404
    stock = client.get("/console/stock").text
    assert "KITAP" not in stock and "ARAY-CERT-1000" in stock
    card = rewards["card"]
    verified = client.post(
        "/console/cards/verify", data={"csrf_token": token, "number": card.number, "pin": card.pin}
    )
    assert verified.status_code == 200 and "KITAP-CERT-2500" not in verified.text
    exchange = client.post(
        "/console/cards/exchange",
        data={
            "csrf_token": token,
            "number": card.number,
            "pin": card.pin,
            "sku": "KITAP-CERT-2500",
            "action_key": "k" * 20,
        },
    )
    assert exchange.status_code == 404
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM exchanges")).scalar() == 0


def test_a_redemption_or_card_of_another_program_is_not_found_for_a_scoped_agent(client, staff, rewards):
    token = signed_in(client, staff.support_business)
    assert client.get(f"/console/redemptions/{rewards['code']}").status_code == 404
    found = client.post("/console/subscriber", data={"csrf_token": token, "phone": PHONE}).text
    assert "ARAY-CINEMA-2000" not in found and "GIFT-CARD" not in found
    blocked = client.post(
        f"/console/redemptions/{rewards['card'].redemption_id}/card/block",
        data={"csrf_token": token, "reason": "test"},
    )
    assert blocked.status_code == 404
    with new_session() as s:
        assert s.execute(text("SELECT status FROM cards")).scalar() == "active"


def test_no_page_shows_a_full_code_pin_card_number_or_unsearched_phone(client, staff, rewards, keys):
    card = rewards["card"]
    with new_session() as s:
        codes = [f"ARAY-CINEMA-2000-T{i:05d}" for i in range(5)] + [
            f"ARAY-CERT-1000-T{i:05d}" for i in range(5)
        ]
        assert s.execute(text("SELECT count(*) FROM codes")).scalar() == 15
    other_phone = "+77019998877"
    post_redemption(client, keys, msisdn=other_phone)
    secrets = [*codes, card.number, card.pin, other_phone, other_phone[1:]]
    pages: dict[str, str] = {}
    for email in (staff.support, staff.finance, staff.admin, staff.partner):
        client.cookies.clear()
        signed_in(client, email)
        for path in PAGES + [
            f"/console/redemptions/{rewards['code']}",
            f"/console/redemptions/{card.redemption_id}",
            "/console/audit",
        ]:
            response = client.get(path)
            pages[f"{email} {path}"] = response.text
    token = signed_in(client, staff.support)
    pages["search"] = client.post("/console/subscriber", data={"csrf_token": token, "phone": PHONE}).text
    client.cookies.clear()
    token = signed_in(client, staff.partner)
    pages["verify"] = client.post(
        "/console/cards/verify", data={"csrf_token": token, "number": card.number, "pin": card.pin}
    ).text
    for name, html in pages.items():
        for secret in secrets:
            assert secret not in html, f"{secret!r} in {name}"
        if name != "search":
            assert "+77011234567" not in html, name
    searched = pages["search"]
    assert "+77011234567" in searched  # the phone the agent searched for, and only there
    detail = pages[f"{staff.support} /console/redemptions/{rewards['code']}"]
    assert "+77011234567" not in detail and "4567" in detail


def test_the_exchanging_cashier_alone_sees_the_certificate_once(client, staff, rewards):
    card = rewards["card"]
    token = signed_in(client, staff.partner)
    html = client.post(
        "/console/cards/exchange",
        data={
            "csrf_token": token,
            "number": card.number,
            "pin": card.pin,
            "sku": "ARAY-CERT-1000",
            "action_key": "a" * 20,
        },
    ).text
    code = re.search(r'id="certificate-code">([^<]+)<', html).group(1)
    assert code.startswith("ARAY-CERT-1000-T")
    assert card.number not in html and card.pin not in html
    client.cookies.clear()
    signed_in(client, staff.support)
    assert code not in client.get(f"/console/redemptions/{card.redemption_id}").text


def test_the_audit_log_has_a_row_for_every_action(client, staff, rewards, keys, tmp_path):
    waiting = post_redemption(client, keys).json()["id"]
    card = rewards["card"]
    address = "testclient"
    token = signed_in(client, staff.support)
    client.post(f"/console/redemptions/{rewards['code']}/resend", data={"csrf_token": token})
    client.post(f"/console/redemptions/{waiting}/cancel", data={"csrf_token": token, "confirm": "yes"})
    client.post(
        f"/console/redemptions/{card.redemption_id}/card/block", data={"csrf_token": token, "reason": "theft"}
    )
    client.post(
        f"/console/redemptions/{card.redemption_id}/card/unblock",
        data={"csrf_token": token, "reason": "found"},
    )
    client.post(
        f"/console/redemptions/{rewards['code']}/cancel", data={"csrf_token": token, "confirm": "yes"}
    )
    client.cookies.clear()
    token = signed_in(client, staff.partner)
    client.post(
        "/console/stock/upload",
        data={"csrf_token": token, "sku": "ARAY-CERT-1000"},
        files={"file": ("codes.csv", b"code\nNEW-0001\n", "text/csv")},
    )
    client.post(
        "/console/cards/exchange",
        data={
            "csrf_token": token,
            "number": card.number,
            "pin": card.pin,
            "sku": "ARAY-CERT-1000",
            "action_key": "b" * 20,
        },
    )
    client.cookies.clear()
    token = signed_in(client, staff.finance)
    client.post(
        "/console/periods/close",
        data={"csrf_token": token, "program": "business", "month": "2026-01", "confirm": "yes"},
    )
    rows = [(r["email"], r["action"], r["outcome"]) for r in audit_rows() if r["action"] != "sign_in"]
    assert rows == [
        (staff.support, "resend", "ok"),
        (staff.support, "cancel", "ok"),
        (staff.support, "block", "ok"),
        (staff.support, "unblock", "ok"),
        (staff.support, "cancel", "not_cancellable"),
        (staff.partner, "upload_codes", "ok"),
        (staff.partner, "exchange_card", "ok"),
        (staff.finance, "close_period", "ok"),
    ]
    assert all(r["address"] == address and r["staff_account_id"] for r in audit_rows())
    html = client.get("/console/audit").text
    for action in ("resend", "cancel", "block", "unblock", "upload_codes", "exchange_card", "close_period"):
        assert f'data-action="{action}"' in html


def test_the_audit_log_cannot_be_changed_or_deleted(client, staff):
    signed_in(client, staff.support)
    for statement in ("UPDATE staff_audit_log SET outcome = 'x'", "DELETE FROM staff_audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), transaction() as s:
            s.execute(text(statement))
    assert len(audit_rows()) == 1


def test_a_second_click_on_exchange_takes_one_certificate(client, staff, rewards):
    card = rewards["card"]
    token = signed_in(client, staff.partner)
    form = {
        "csrf_token": token,
        "number": card.number,
        "pin": card.pin,
        "sku": "ARAY-CERT-1000",
        "action_key": "c" * 20,
    }
    first = client.post("/console/cards/exchange", data=form).text
    second = client.post("/console/cards/exchange", data=form).text
    code = re.search(r'id="certificate-code">([^<]+)<', first).group(1)
    assert 'id="desk-already"' in second and code in second
    with new_session() as s:
        assert s.execute(text("SELECT count(*), min(balance_minor) FROM exchanges, cards")).one() == (
            1,
            400000,
        )
