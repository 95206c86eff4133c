"""What each console page shows and does, through the app in process (the browser suite walks the
same pages in Chromium). State is built with the API and the domain functions."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from service.console import dashboard, i18n
from service.kit.db.engine import new_session, transaction
from service.ledger.periods import find_document, iter_document
from tests.conftest import import_codes_for, post_redemption
from tests.console.helpers import signed_in
from tests.console.scenario import audit_rows, send_sms
from tests.finance_helpers import redeem_at
from tests.test_cards import exchange, issue_card

TEMPLATES = Path(__file__).parents[2] / "service" / "console" / "templates"


def _status(redemption_id: str) -> str:
    with new_session() as s:
        return s.execute(
            text("SELECT status FROM redemptions WHERE id = :id"), {"id": redemption_id}
        ).scalar()


def _last_month() -> tuple[datetime, str]:
    now = datetime.now(UTC).astimezone(i18n.DEFAULT_ZONE)
    at = (now.replace(day=1) - timedelta(days=1)).replace(day=5, hour=12)
    return at, f"{at:%Y-%m}"


# --- subscriber -----------------------------------------------------------------------------------


def test_a_subscriber_is_found_by_any_form_of_the_phone_newest_first(client, keys, staff):
    import_codes_for("ARAY-CINEMA-2000", 5)
    first = post_redemption(client, keys, msisdn="87011234567").json()["id"]
    second = post_redemption(client, keys, msisdn="+7 701 123 45 67").json()["id"]
    post_redemption(client, keys, msisdn="87019990000")
    token = signed_in(client, staff.support)
    for form in ("87011234567", "7011234567", "+7 701 123 45 67", "8 (701) 123-45-67"):
        html = client.post("/console/subscriber", data={"csrf_token": token, "phone": form}).text
        assert re.findall(r"/console/redemptions/([0-9a-f-]{36})", html) == [second, first], form


def test_a_phone_that_is_not_a_mobile_number_is_explained(client, staff):
    token = signed_in(client, staff.support)
    response = client.post("/console/subscriber", data={"csrf_token": token, "phone": "12345"})
    assert response.status_code == 422 and i18n.translate("ru", "sub.bad_phone") in response.text


def test_cancel_asks_for_confirmation_before_it_cancels(client, keys, staff):
    import_codes_for("ARAY-CINEMA-2000", 1)
    rid = post_redemption(client, keys).json()["id"]
    token = signed_in(client, staff.support)
    asked = client.post(f"/console/redemptions/{rid}/cancel", data={"csrf_token": token})
    assert 'id="cancel-confirm"' in asked.text and _status(rid) == "accepted"
    done = client.post(f"/console/redemptions/{rid}/cancel", data={"csrf_token": token, "confirm": "yes"})
    assert done.status_code == 200 and 'id="flash"' in done.text and _status(rid) == "cancelled"


def test_a_refused_cancel_is_shown_as_the_apis_problem_in_words(client, keys, staff, tmp_path):
    import_codes_for("ARAY-CINEMA-2000", 1)
    rid = post_redemption(client, keys).json()["id"]
    send_sms(rid, tmp_path)
    token = signed_in(client, staff.support)
    response = client.post(f"/console/redemptions/{rid}/cancel", data={"csrf_token": token, "confirm": "yes"})
    assert response.status_code == 409
    assert i18n.translate("ru", "problem.not_cancellable") in response.text
    assert _status(rid) == "delivered"


# The cancel button: shown exactly when the API's cancel would cancel the redemption. Each state is
# built through the API, the delivery function and the sandbox provider; (what it builds, the key
# whose cancel is asked, whether the cancel is allowed).


def _accepted(client, keys, tmp_path) -> tuple[str, str]:
    return post_redemption(client, keys).json()["id"], "loyalty"


def _failed_before_any_provider_took_it(client, keys, tmp_path) -> tuple[str, str]:
    from service.auth.service import create_key
    from service.delivery.service import deliver
    from service.kit.db.engine import transaction
    from service.sandbox.service import SMS_FAILED

    with transaction() as s:
        keys.sandbox = create_key(s, role="loyalty", name="t", programs=["mobile-bonus"], sandbox=True).key
    rid = post_redemption(client, keys, role="sandbox", msisdn=SMS_FAILED).json()["id"]
    deliver(uuid.UUID(rid), 0)  # the sandbox provider refuses its magic number for good
    return rid, "sandbox"


def _sent(client, keys, tmp_path) -> tuple[str, str]:
    rid = post_redemption(client, keys).json()["id"]
    send_sms(rid, tmp_path, state=None)
    return rid, "loyalty"


def _delivered(client, keys, tmp_path) -> tuple[str, str]:
    rid = post_redemption(client, keys).json()["id"]
    send_sms(rid, tmp_path)
    return rid, "loyalty"


def _failed_after_the_provider_took_it(client, keys, tmp_path) -> tuple[str, str]:
    rid = post_redemption(client, keys).json()["id"]
    send_sms(rid, tmp_path, state="UNDELIV")
    return rid, "loyalty"


def _resent_after_a_failure(client, keys, tmp_path) -> tuple[str, str]:
    """`accepted` again, but the code has left once (first_sent_at)."""
    rid, role = _failed_after_the_provider_took_it(client, keys, tmp_path)
    assert client.post(f"/v1/redemptions/{rid}/resend", headers=keys.header(role)).status_code == 202
    return rid, role


def _card_untouched(client, keys, tmp_path) -> tuple[str, str]:
    card = issue_card(client, keys)
    send_sms(card.redemption_id, tmp_path)
    return card.redemption_id, "loyalty"


def _card_partly_exchanged(client, keys, tmp_path) -> tuple[str, str]:
    card = issue_card(client, keys)
    assert exchange(client, keys, card).status_code == 201
    return card.redemption_id, "loyalty"


def _card_blocked(client, keys, tmp_path) -> tuple[str, str]:
    card = issue_card(client, keys)
    blocked = client.post(
        f"/v1/cards/by-redemption/{card.redemption_id}/block",
        json={"reason": "lost phone"},
        headers=keys.header("support"),
    )
    assert blocked.status_code == 200
    return card.redemption_id, "loyalty"


def _cancelled(client, keys, tmp_path) -> tuple[str, str]:
    rid = post_redemption(client, keys).json()["id"]
    assert client.post(f"/v1/redemptions/{rid}/cancel", headers=keys.header("loyalty")).status_code == 200
    return rid, "loyalty"


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        (_accepted, True),
        (_failed_before_any_provider_took_it, True),
        (_sent, False),
        (_delivered, False),
        (_failed_after_the_provider_took_it, False),
        (_resent_after_a_failure, False),
        (_card_untouched, True),
        (_card_partly_exchanged, False),
        (_card_blocked, False),
        (_cancelled, False),  # nothing left to cancel: the API answers it as it is
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else None,
)
def test_the_cancel_button_shows_exactly_when_the_apis_cancel_would_cancel(
    client, keys, staff, tmp_path, state, allowed
):
    import_codes_for("ARAY-CINEMA-2000", 2)
    import_codes_for("ARAY-CERT-1000", 2)
    rid, role = state(client, keys, tmp_path)
    before = _status(rid)
    signed_in(client, staff.support)
    html = client.get(f"/console/redemptions/{rid}").text
    confirmation = client.get(f"/console/redemptions/{rid}/cancel").text
    answer = client.post(f"/v1/redemptions/{rid}/cancel", headers=keys.header(role))
    assert answer.status_code in (200, 409), answer.text
    cancelled_now = answer.status_code == 200 and before != "cancelled" and _status(rid) == "cancelled"
    assert cancelled_now is allowed
    assert ('id="cancel"' in html) is allowed
    assert ('id="cancel-confirm"' in confirmation) is allowed


def test_a_fourth_resend_is_refused_with_the_limit_in_words(client, keys, staff):
    import_codes_for("ARAY-CINEMA-2000", 1)
    rid = post_redemption(client, keys).json()["id"]
    token = signed_in(client, staff.support)
    for _ in range(3):
        assert (
            client.post(f"/console/redemptions/{rid}/resend", data={"csrf_token": token}).status_code == 200
        )
    refused = client.post(f"/console/redemptions/{rid}/resend", data={"csrf_token": token})
    assert refused.status_code == 409 and i18n.translate("ru", "problem.resend_limit_reached") in refused.text
    assert len(re.findall(r'class="sms-attempt"', refused.text)) == 3  # the three queued resends


def test_the_redemption_page_shows_sms_attempts_with_the_providers_status_and_webhooks(
    client, keys, staff, tmp_path
):
    import_codes_for("ARAY-CINEMA-2000", 1)
    rid = post_redemption(client, keys).json()["id"]
    send_sms(rid, tmp_path, state="UNDELIV")
    signed_in(client, staff.support)
    html = client.get(f"/console/redemptions/{rid}").text
    assert "UNDELIV" in html and "redemption.sent" in html and "redemption.failed" in html
    assert "s-failed" in html


def test_the_redemption_page_shows_each_webhook_attempt_with_its_error_and_next_try(client, keys, staff):
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
    signed_in(client, staff.support)
    html = client.get(f"/console/redemptions/{rid}").text
    attempts = re.search(r'<ol class="webhook-attempts small">(.*?)</ol>', html, re.S).group(1)
    assert attempts.count("ConnectionRefusedError") == 2
    for n in (1, 2):
        assert i18n.translate("ru", "red.webhook_try", n=n) in attempts
    assert attempts.count(i18n.translate("ru", "red.webhook_next", at="").strip()) == 2


def test_blocking_a_card_needs_a_reason(client, keys, staff):
    card = issue_card(client, keys)
    token = signed_in(client, staff.support)
    response = client.post(
        f"/console/redemptions/{card.redemption_id}/card/block", data={"csrf_token": token, "reason": "  "}
    )
    assert response.status_code == 422
    with new_session() as s:
        assert s.execute(text("SELECT status FROM cards")).scalar() == "active"


def _lock_for_everyone(card) -> None:
    """Wrong PINs from four addresses (the public /card page's clients), five each: the cap."""
    from service.cards.lockout import CardClient
    from service.cards.service import authenticate_card

    for i in range(4):
        for _ in range(5):
            with transaction() as s:
                try:
                    authenticate_card(
                        s,
                        card.number,
                        card.wrong_pin,
                        now=datetime.now(UTC),
                        client=CardClient.address(f"192.0.2.{i}"),
                    )
                except Exception:  # noqa: BLE001 - the refusals are what is counted
                    pass


def test_support_sees_a_locked_card_and_lifts_the_lock_with_a_reason(client, keys, staff):
    card = issue_card(client, keys)
    _lock_for_everyone(card)
    token = signed_in(client, staff.support)
    page = client.get(f"/console/redemptions/{card.redemption_id}").text
    assert 'id="card-lock"' in page and 'id="unlock"' in page
    done = client.post(
        f"/console/redemptions/{card.redemption_id}/card/unlock",
        data={"csrf_token": token, "reason": "holder called, identity checked"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    page = client.get(done.headers["location"]).text
    assert 'id="card-lock"' not in page and i18n.translate("ru", "event.unlocked") in page
    verify = client.post(
        "/v1/cards/verify", json={"number": card.number, "pin": card.pin}, headers=keys.header("partner")
    )
    assert verify.status_code == 200
    (row,) = [r for r in audit_rows() if r["action"] == "unlock"]
    assert row["details"]["reason"] == "holder called, identity checked" and row["outcome"] == "ok"


# --- card desk ------------------------------------------------------------------------------------


def test_wrong_pins_at_the_desk_are_counted_for_the_partner_and_the_fifth_holds_it_back(client, keys, staff):
    card = issue_card(client, keys)
    token = signed_in(client, staff.partner)
    for left in (4, 3, 2, 1):
        response = client.post(
            "/console/cards/verify", data={"csrf_token": token, "number": card.number, "pin": card.wrong_pin}
        )
        assert (
            response.status_code == 422
            and i18n.translate("ru", "problem.wrong_card_or_pin", remaining_attempts=left) in response.text
        )
    locked = client.post(
        "/console/cards/verify", data={"csrf_token": token, "number": card.number, "pin": card.wrong_pin}
    )
    assert locked.status_code == 423
    right = client.post(
        "/console/cards/verify", data={"csrf_token": token, "number": card.number, "pin": card.pin}
    )
    assert right.status_code == 423 and i18n.translate("ru", "problem.card_locked") in right.text
    # The desk and the partner's API keys are one client; another partner is not held back.
    body = {"number": card.number, "pin": card.pin}
    assert client.post("/v1/cards/verify", json=body, headers=keys.header("partner")).status_code == 423
    assert client.post("/v1/cards/verify", json=body, headers=keys.header("other_partner")).status_code == 200


def test_the_desk_lists_only_the_cashiers_certificates_and_what_the_balance_covers(client, keys, staff):
    import_codes_for("ARAY-CERT-1000", 2)
    card = issue_card(client, keys)
    token = signed_in(client, staff.partner)
    html = client.post(
        "/console/cards/verify", data={"csrf_token": token, "number": card.number, "pin": card.pin}
    ).text
    assert re.findall(r'data-sku="([^"]+)"', html) == ["ARAY-CERT-1000"]
    assert "5 000,00 ₸" in html.replace(i18n.NBSP, " ")


# --- stock ----------------------------------------------------------------------------------------


def test_the_stock_page_shows_counts_runway_and_the_low_flag(client, keys, staff):
    import_codes_for("ARAY-CINEMA-2000", 10)
    for i in range(3):
        post_redemption(client, keys, msisdn=f"8701000000{i}")
    signed_in(client, staff.support)
    html = client.get("/console/stock").text.replace(i18n.NBSP, " ")
    row = re.search(r'<tr id="sku-ARAY-CINEMA-2000">(.*?)</tr>', html, re.S).group(1)
    assert re.findall(r'class="num[^"]*">([^<]+)<', row)[:4] == ["7", "3", "0", "0"]
    assert "16,3 дн." in row  # 7 available at 3 a week
    assert i18n.translate("ru", "stock.low") in row


def test_uploading_the_same_file_twice_adds_nothing(client, staff):
    token = signed_in(client, staff.partner)
    body = b"code,pin,expires_at\nFILE-0001,,\nFILE-0002,1234,2030-01-01\n"
    counts = []
    for _ in range(2):
        html = client.post(
            "/console/stock/upload",
            data={"csrf_token": token, "sku": "ARAY-CERT-1000"},
            files={"file": ("codes.csv", body, "text/csv")},
            headers={"HX-Request": "true"},
        ).text
        counts.append(re.findall(r'id="count-\w+">(\d+)<', html))
    assert counts == [["2", "0", "0"], ["0", "2", "0"]]


def test_support_sees_stock_but_cannot_upload(client, staff):
    token = signed_in(client, staff.support)
    assert 'id="upload-form"' not in client.get("/console/stock").text
    response = client.post(
        "/console/stock/upload",
        data={"csrf_token": token, "sku": "ARAY-CERT-1000"},
        files={"file": ("codes.csv", b"code\nX-1\n", "text/csv")},
    )
    assert response.status_code == 403


# --- month close ----------------------------------------------------------------------------------


def test_a_month_that_has_not_ended_cannot_be_closed(client, staff):
    token = signed_in(client, staff.finance)
    month = f"{datetime.now(UTC).astimezone(i18n.DEFAULT_ZONE):%Y-%m}"
    page = client.get("/console/periods", params={"program": "mobile-bonus", "month": month}).text
    assert 'id="not-ended"' in page and 'id="close"' not in page
    refused = client.post(
        "/console/periods/close",
        data={"csrf_token": token, "program": "mobile-bonus", "month": month, "confirm": "yes"},
    )
    assert refused.status_code == 409 and i18n.translate("ru", "problem.period_not_ended") in refused.text


def test_a_closed_months_documents_download_as_stored(client, staff):
    import_codes_for("ARAY-CINEMA-2000", 3)
    at, month = _last_month()
    redeem_at(at)
    token = signed_in(client, staff.finance)
    before = client.get("/console/periods", params={"program": "mobile-bonus", "month": month}).text
    assert "2 000,00 ₸" in before.replace(i18n.NBSP, " ") and 'id="close"' in before
    closed = client.post(
        "/console/periods/close",
        data={"csrf_token": token, "program": "mobile-bonus", "month": month, "confirm": "yes"},
    )
    assert 'id="documents"' in closed.text and "p-closed" in closed.text
    for kind in ("act.pdf", "registry.xlsx", "registry.csv"):
        response = client.get(
            f"/console/periods/{month}/documents/{kind}", params={"program": "mobile-bonus"}
        )
        doc = find_document("mobile-bonus", at.date().replace(day=1), kind)
        assert response.status_code == 200 and response.content == b"".join(iter_document(doc.document_id))
    assert (
        client.get(f"/console/periods/{month}/documents/act.pdf", params={"program": "business"}).status_code
        == 404
    )


def test_partner_settlements_show_what_is_owed(client, staff):
    import_codes_for("ARAY-CINEMA-2000", 3)
    at, month = _last_month()
    redeem_at(at)
    redeem_at(at)
    signed_in(client, staff.finance)
    html = client.get("/console/periods", params={"program": "mobile-bonus", "month": month}).text
    table = re.search(r'<table class="list small" id="settlements">(.*?)</table>', html, re.S).group(1)
    assert "Aray Cinema" in table and "3 600,00 ₸" in table.replace(i18n.NBSP, " ")


def test_a_partner_report_shows_missing_extra_and_amount_differences(client, staff):
    import_codes_for("ARAY-CINEMA-2000", 3)
    at, month = _last_month()
    for _ in range(3):
        redeem_at(at)
    with new_session() as s:
        issued = s.execute(text("SELECT count(*) FROM codes WHERE status <> 'available'")).scalar()
    assert issued == 3
    codes = [f"ARAY-CINEMA-2000-T{i:05d}" for i in range(3)]
    report = f"code,activated_at,amount\n{codes[0]},,2000.00\n{codes[1]},,1500.00\nNOT-OURS-0001,,2000.00\n"
    token = signed_in(client, staff.finance)
    html = client.post(
        "/console/periods/reconcile",
        data={"csrf_token": token, "program": "mobile-bonus", "month": month, "partner": "aray-cinema"},
        files={"file": ("report.csv", report.encode(), "text/csv")},
    ).text
    found = {
        k: re.search(rf'id="rc-{k}">(\d+)<', html).group(1)
        for k in ("matched", "missing", "extra", "mismatch")
    }
    assert found == {"matched": "2", "missing": "1", "extra": "1", "mismatch": "1"}
    assert codes[2] not in html and "…0002" in html  # the missing code by its last 4 only


# --- dashboard ------------------------------------------------------------------------------------


def test_the_dashboard_counts_today_sms_latency_budget_and_backlog(client, keys, staff, tmp_path):
    import_codes_for("ARAY-CINEMA-2000", 5)
    now = datetime.now(UTC)
    ids = [redeem_at(now - timedelta(minutes=m)) for m in (1, 2, 3)]
    send_sms(ids[0], tmp_path, at=now - timedelta(seconds=50), receipt_after=timedelta(seconds=4))
    send_sms(
        ids[1], tmp_path, at=now - timedelta(seconds=110), receipt_after=timedelta(seconds=2), state="UNDELIV"
    )
    signed_in(client, staff.admin)
    data = client.get("/console/dashboard/data").json()
    assert data["today"]["mobile-bonus"] == 3 and data["today_total"] == 3
    assert data["sms"] == {"delivered": 1, "failed": 1, "pending": 0}
    assert data["latency"]["count"] == 1 and 13 < data["latency"]["p50"] < 15  # 60 - 50 + 4 s
    assert sum(data["per_minute"]["series"]["mobile-bonus"]) == 3 and len(data["per_minute"]["minutes"]) == 60
    assert {
        "program": "mobile-bonus",
        "currency": "KZT",
        "budget": 5_000_000_000,
        "spent": 600_000,
    }.items() <= next(b for b in data["budget"] if b["program"] == "mobile-bonus").items()
    assert data["outbox"]["waiting"] >= 1
    assert next(r for r in data["runway"] if r["sku"] == "ARAY-CINEMA-2000")["available"] == 2


def test_the_dashboard_is_scoped_like_the_api(client, keys, staff):
    import_codes_for("ARAY-CINEMA-2000", 5)
    post_redemption(client, keys)
    signed_in(client, staff.support_business)
    scoped = client.get("/console/dashboard/data").json()
    assert list(scoped["today"]) == ["business"] and scoped["runway"] == [] and scoped["outbox"] == {}
    client.cookies.clear()
    signed_in(client, staff.partner)
    partner = client.get("/console/dashboard/data").json()
    assert partner["today"] == {} and partner["budget"] == []
    assert {r["sku"] for r in partner["runway"]} == {"ARAY-CINEMA-2000", "ARAY-CERT-1000"}


def test_the_dashboard_counts_a_slow_pool_only_up_to_its_cap(client, staff):
    import_codes_for("ARAY-CERT-1000", dashboard.RUNWAY_FLOOR + 50)
    signed_in(client, staff.partner)
    line = next(
        r for r in client.get("/console/dashboard/data").json()["runway"] if r["sku"] == "ARAY-CERT-1000"
    )
    assert (line["available"], line["at_least"], line["days"]) == (dashboard.RUNWAY_FLOOR, True, None)
    assert "1 050" in client.get("/console/stock").text.replace(i18n.NBSP, " ")  # the stock page counts all


def test_time_floor_is_the_smallest_uuid7_of_its_millisecond():
    from service.kit.values.ids import uuid7

    at = datetime.now(UTC)
    floor = dashboard.time_floor(at)
    later = uuid7()
    assert floor <= later and str(floor).endswith("-0000-0000-000000000000")
    assert dashboard.time_floor(at + timedelta(milliseconds=1)) > floor


# --- language, money, time ------------------------------------------------------------------------


def test_every_label_a_template_uses_is_translated_in_russian_kazakh_and_english():
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r't\(\s*"([a-z_.]+)"', template.read_text()))
    used = {key for key in used if not key.endswith(".")}
    assert used <= set(i18n.MESSAGES), sorted(used - set(i18n.MESSAGES))
    for key, texts in i18n.MESSAGES.items():
        assert len(texts) == 3 and all(t.strip() for t in texts), key


def test_every_label_built_from_a_value_is_translated():
    for prefix, values in {
        "status.": (
            "accepted",
            "sent",
            "delivered",
            "failed",
            "cancelled",
            "pending",
            "submitting",
            "active",
            "blocked",
            "exhausted",
            "expired",
            "open",
            "closing",
            "closed",
        ),
        "role.": ("support", "finance", "partner", "admin", "approver"),
        "camp.status.": ("draft", "submitted", "approved", "running", "paused", "done", "cancelled"),
        "camp.move.": ("submit", "approve", "reject", "pause", "resume", "cancel"),
        "camp.locale.": ("ru", "kk", "en"),
        "event.": ("blocked", "unblocked", "locked", "unlocked", "expired"),
        "action.": (
            "sign_in",
            "sign_out",
            "resend",
            "cancel",
            "block",
            "unblock",
            "unlock",
            "close_period",
            "upload_codes",
            "verify_card",
            "exchange_card",
            "reconcile_partner",
            "campaign_create",
            "campaign_upload",
            "campaign_submit",
            "campaign_approve",
            "campaign_reject",
            "campaign_pause",
            "campaign_resume",
            "campaign_cancel",
        ),
        "per.doc.": ("act.pdf", "registry.xlsx", "registry.csv"),
    }.items():
        for value in values:
            assert prefix + value in i18n.MESSAGES, prefix + value


def test_money_is_written_with_spaced_thousands_a_decimal_comma_and_the_tenge_sign():
    assert i18n.format_money(500_000, "KZT").replace(i18n.NBSP, " ") == "5 000,00 ₸"
    assert i18n.format_money(123_456_789, "KZT").replace(i18n.NBSP, " ") == "1 234 567,89 ₸"
    assert i18n.money_of({"amount": "-15.50", "currency": "KZT"}).replace(i18n.NBSP, " ") == "-15,50 ₸"
    assert i18n.format_money(100, "USD").replace(i18n.NBSP, " ") == "1,00 USD"


def test_times_are_shown_in_the_programs_time_zone():
    at = datetime(2026, 3, 31, 19, 30, tzinfo=UTC)
    assert i18n.format_time(at) == "01.04.2026 00:30"  # Almaty is UTC+5


@pytest.mark.parametrize(
    ("locale", "label"), [("ru", "Поиск абонента"), ("kk", "Абонентті іздеу"), ("en", "Find a subscriber")]
)
def test_the_language_switch_changes_every_label(client, staff, locale, label):
    signed_in(client, staff.support)
    response = client.get(
        f"/console/lang/{locale}", params={"next": "/console/subscriber"}, follow_redirects=False
    )
    assert response.headers["location"] == "/console/subscriber"
    html = client.get("/console/subscriber").text
    assert label in html and f'<html lang="{locale}">' in html


def test_a_sandbox_redemption_is_marked_on_the_subscriber_and_redemption_pages(client, keys, staff):
    from service.auth.service import create_key
    from service.kit.db.engine import transaction

    import_codes_for("ARAY-CINEMA-2000", 1)
    with transaction() as s:
        keys.sandbox = create_key(s, role="loyalty", name="t", programs=["mobile-bonus"], sandbox=True).key
    real = post_redemption(client, keys, msisdn="87011234567").json()["id"]
    test = post_redemption(client, keys, role="sandbox", msisdn="87011234567").json()["id"]
    token = signed_in(client, staff.support)
    label = i18n.translate("ru", "red.sandbox")
    listing = client.post("/console/subscriber", data={"csrf_token": token, "phone": "87011234567"}).text
    rows = {rid: row for row in listing.split("<tr") for rid in (real, test) if rid in row}
    assert label in rows[test] and label not in rows[real]
    assert label in client.get(f"/console/redemptions/{test}").text
    assert label not in client.get(f"/console/redemptions/{real}").text
