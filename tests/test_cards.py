"""Universal cards at partners (SPEC "Partners", invariants 1-4): verify, exchange, lockout, expiry,
blocking. One behaviour per test; cards are issued through the redemption API."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.cards import ratelimit, routes
from service.kit.db.engine import new_session, transaction
from service.kit.security.crypto import get_vault
from tests.conftest import assert_problem, import_codes_for, post_redemption, table_counts

_msisdn = itertools.count(1000000)
_idem = itertools.count(1)


@dataclass
class IssuedCard:
    number: str
    pin: str
    redemption_id: str
    card_id: int

    @property
    def wrong_pin(self) -> str:
        return f"{(int(self.pin) + 1) % 10 ** len(self.pin):0{len(self.pin)}d}"


def issue_card(client, keys, **overrides) -> IssuedCard:
    """A 5000.00 card through the API, its number and PIN read back from the vault like the SMS does."""
    body = {"offer": "gift-card-5000", "points": 5000, "msisdn": f"8701{next(_msisdn):07d}", **overrides}
    response = post_redemption(client, keys, **body)
    assert response.status_code == 201, response.text
    with new_session() as s:
        card = s.execute(
            text(
                "SELECT c.id, c.number_enc, c.pin_enc FROM cards c JOIN redemptions r"
                " ON r.card_id = c.id WHERE r.id = :id"
            ),
            {"id": response.json()["id"]},
        ).one()
    vault = get_vault()
    return IssuedCard(
        vault.decrypt(bytes(card.number_enc), b"card-number"),
        vault.decrypt(bytes(card.pin_enc), b"card-pin"),
        response.json()["id"],
        card.id,
    )


def verify(client, keys, card: IssuedCard, role: str = "partner", pin: str | None = None):
    return client.post(
        "/v1/cards/verify", json={"number": card.number, "pin": pin or card.pin}, headers=keys.header(role)
    )


def exchange(
    client,
    keys,
    card: IssuedCard,
    sku: str = "ARAY-CERT-1000",
    role: str = "partner",
    pin: str | None = None,
    key: str | None = None,
):
    return client.post(
        "/v1/cards/exchanges",
        json={"number": card.number, "pin": pin or card.pin, "sku": sku},
        headers={**keys.header(role), "Idempotency-Key": key or f"exchange-{next(_idem)}"},
    )


def _card_row(card: IssuedCard):
    with new_session() as s:
        return s.execute(text("SELECT * FROM cards WHERE id = :id"), {"id": card.card_id}).one()


@pytest.fixture
def card(client, keys) -> IssuedCard:
    import_codes_for("ARAY-CERT-1000", 8)
    import_codes_for("KITAP-CERT-2500", 4)
    return issue_card(client, keys)


@pytest.fixture
def fixed_clock(monkeypatch):
    """The routes' clock, set and moved by the test."""
    now = {"t": datetime.now(UTC)}
    monkeypatch.setattr(routes, "clock", lambda: now["t"])
    return now


# --- verify ----------------------------------------------------------------------------------------


def test_verify_shows_balance_expiry_status_and_only_the_partners_exchangeable_products(client, keys, card):
    response = verify(client, keys, card)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["balance"] == {"amount": "5000.00", "currency": "KZT"} and body["status"] == "active"
    assert body["last4"] == card.number[-4:] and body["expires_at"]
    assert body["products"] == [
        {
            "sku": "ARAY-CERT-1000",
            "name": "Aray Cinema certificate 1 000 ₸",
            "face_value": {"amount": "1000.00", "currency": "KZT"},
            "affordable": True,
        }
    ]
    assert card.number not in response.text and card.pin not in response.text


def test_another_partner_sees_only_its_own_products_on_the_same_card(client, keys, card):
    products = verify(client, keys, card, role="other_partner").json()["products"]
    assert [p["sku"] for p in products] == ["KITAP-CERT-2500"]


def test_admin_sees_the_whole_exchange_catalog(client, keys, card):
    products = verify(client, keys, card, role="admin").json()["products"]
    assert [p["sku"] for p in products] == ["ARAY-CERT-1000", "DALA-CERT-5000", "KITAP-CERT-2500"]


@pytest.mark.parametrize("role", ["loyalty", "finance", "support"])
def test_only_partner_keys_may_verify(client, keys, card, role):
    assert_problem(verify(client, keys, card, role=role), 403, "forbidden")


@pytest.mark.parametrize(
    "payload",
    [
        {"number": "1234", "pin": "1234"},
        {"number": "93980000000000０1", "pin": "1234"},  # a non-ASCII digit
        {"number": "9398000000000001", "pin": "12a4"},
        {"number": "9398000000000001", "pin": "123"},
        {"number": 9398000000000001, "pin": "1234"},
        {"number": "9398000000000001"},
        {"number": "9398000000000001", "pin": "1234", "extra": 1},
    ],
)
def test_malformed_numbers_and_pins_are_validation_errors_that_echo_nothing(client, keys, payload):
    response = client.post("/v1/cards/verify", json=payload, headers=keys.header("partner"))
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"]
    assert str(payload["number"]) not in response.text


@pytest.mark.parametrize("route", ["/v1/cards/verify", "/v1/cards/exchanges"])
def test_sixteen_digits_with_a_wrong_check_digit_are_invalid_card_number(client, keys, route):
    # The schema allows any 16 digits and describes the check digit: a typo is its own refusal (issue 15).
    payload = {
        "number": "9398000000000002",
        "pin": "1234",
        **({"sku": "ARAY-CERT-1000"} if "exch" in route else {}),
    }
    headers = {**keys.header("partner"), "Idempotency-Key": f"typo-{route}"}
    response = client.post(route, json=payload, headers=headers)
    body = assert_problem(response, 422, "invalid_card_number")
    assert body["errors"][0]["field"] == "body.number"
    assert "9398000000000002" not in response.text


# --- lockout: tests/test_card_lockout.py (per client, progressive, a global cap; no oracle) ----------


# --- rate limit ------------------------------------------------------------------------------------


def test_card_lookups_are_rate_limited_per_key(client, keys, card, fixed_clock, monkeypatch):
    monkeypatch.setattr(ratelimit, "LIMIT", 3)
    fixed_clock["t"] = datetime.fromtimestamp((int(fixed_clock["t"].timestamp()) // 60) * 60 + 10, UTC)
    for _ in range(3):
        assert verify(client, keys, card).status_code == 200
    limited = verify(client, keys, card)
    assert_problem(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"] == "50"
    assert_problem(exchange(client, keys, card), 429, "rate_limited")
    assert verify(client, keys, card, role="other_partner").status_code == 200  # per key
    fixed_clock["t"] += timedelta(seconds=50)
    assert verify(client, keys, card).status_code == 200
    assert _card_row(card).balance_minor == 500000  # the limited exchange did nothing


# --- exchange --------------------------------------------------------------------------------------


def test_an_exchange_debits_the_card_and_hands_over_a_certificate_with_its_record(client, keys, card):
    response = exchange(client, keys, card)
    assert response.status_code == 201, response.text
    body = response.json()
    certificate = body["certificate"]
    assert (
        certificate["code"].startswith("ARAY-CERT-1000-T")
        and certificate["last4"] == certificate["code"][-4:]
    )
    assert certificate["face_value"] == body["amount"] == {"amount": "1000.00", "currency": "KZT"}
    assert (
        body["card"]["balance"] == {"amount": "4000.00", "currency": "KZT"}
        and body["card"]["status"] == "active"
    )
    assert card.number not in response.text and card.pin not in response.text
    with new_session() as s:
        code = s.execute(
            text("SELECT c.status, c.last4 FROM codes c JOIN exchanges e ON e.code_id = c.id")
        ).one()
        row = s.execute(text("SELECT * FROM exchanges")).one()
        record = s.execute(
            text(
                "SELECT r.*, p.code AS partner FROM reconciliation_records r"
                " JOIN partners p ON p.id = r.partner_id WHERE type = 'exchange'"
            )
        ).one()
        issue = s.execute(
            text("SELECT program_id, offer_id FROM reconciliation_records WHERE type = 'issue'")
        ).one()
    assert code == ("issued", certificate["last4"])
    assert (row.card_id, row.amount_minor, str(row.id)) == (card.card_id, 100000, body["id"])
    assert (record.sku, record.partner, record.quantity) == ("ARAY-CERT-1000", "aray-cinema", 1)
    assert (record.face_value_minor, record.cost_minor) == (
        100000,
        95000,
    )  # liability down, owed to the partner
    assert record.vat_rate_bp == 1600 and record.vat_minor == 13793  # the card's VAT falls at redemption
    assert record.card_id == card.card_id and record.code_last4 == certificate["last4"]
    assert (record.program_id, record.offer_id) == tuple(issue)
    assert _card_row(card).balance_minor == 400000


def test_the_idempotency_store_never_holds_the_certificate_or_the_card(client, keys, card):
    body = exchange(client, keys, card, key="store-check").json()
    with new_session() as s:
        stored = s.execute(
            text("SELECT response_body::text FROM idempotency_keys WHERE key = 'store-check'")
        ).scalar_one()
    assert body["certificate"]["code"] not in stored and body["certificate"]["last4"] in stored
    assert card.number not in stored and f'"{card.pin}"' not in stored


def test_an_exchange_replayed_with_the_same_key_returns_the_same_certificate_once(client, keys, card):
    first = exchange(client, keys, card, key="exchange-once")
    again = exchange(client, keys, card, key="exchange-once")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert _card_row(card).balance_minor == 400000
    assert table_counts("exchanges", "reconciliation_records") == {
        "exchanges": 1,
        "reconciliation_records": 2,
    }


def test_the_same_exchange_key_with_another_body_is_a_conflict(client, keys, card):
    exchange(client, keys, card, key="exchange-conflict")
    assert_problem(
        exchange(client, keys, card, key="exchange-conflict", pin=card.wrong_pin), 422, "idempotency_conflict"
    )


def test_an_exchange_needs_an_idempotency_key(client, keys, card):
    response = client.post(
        "/v1/cards/exchanges",
        json={"number": card.number, "pin": card.pin, "sku": "ARAY-CERT-1000"},
        headers=keys.header("partner"),
    )
    assert_problem(response, 400, "idempotency_key_missing")


def test_a_partner_cannot_exchange_into_another_partners_product(client, keys, card):
    assert_problem(exchange(client, keys, card, sku="KITAP-CERT-2500"), 404, "unknown_product")
    assert_problem(exchange(client, keys, card, sku="NO-SUCH-SKU"), 404, "unknown_product")
    assert _card_row(card).balance_minor == 500000 and table_counts("exchanges")["exchanges"] == 0


def test_a_product_outside_the_cards_exchange_catalog_is_not_exchangeable(client, keys, card):
    import_codes_for("ARAY-CINEMA-2000", 1)
    assert_problem(exchange(client, keys, card, sku="ARAY-CINEMA-2000"), 422, "not_exchangeable")


@pytest.mark.parametrize("role", ["loyalty", "finance", "support", "admin"])
def test_only_partners_exchange(client, keys, card, role):
    assert_problem(exchange(client, keys, card, role=role), 403, "forbidden")


def test_partial_exchanges_at_two_partners_and_insufficient_balance(client, keys, card):
    assert exchange(client, keys, card).status_code == 201  # 4000.00 left
    assert (
        exchange(client, keys, card, sku="KITAP-CERT-2500", role="other_partner").status_code == 201
    )  # 1500.00
    body = assert_problem(
        exchange(client, keys, card, sku="KITAP-CERT-2500", role="other_partner"), 409, "insufficient_balance"
    )
    assert "1500.00" in body["detail"]
    assert _card_row(card).balance_minor == 150000
    assert verify(client, keys, card, role="other_partner").json()["products"][0]["affordable"] is False


def test_the_card_is_exhausted_at_zero_and_refuses_further_exchanges(client, keys, card):
    balances = [exchange(client, keys, card).json()["card"] for _ in range(5)]
    assert [b["balance"]["amount"] for b in balances] == ["4000.00", "3000.00", "2000.00", "1000.00", "0.00"]
    assert balances[-1]["status"] == "exhausted" and _card_row(card).status == "exhausted"
    assert_problem(exchange(client, keys, card), 409, "card_exhausted")
    assert verify(client, keys, card).json()["status"] == "exhausted"


def test_an_empty_certificate_pool_is_out_of_stock_and_debits_nothing(client, keys):
    card = issue_card(client, keys)
    assert_problem(exchange(client, keys, card), 409, "out_of_stock")
    assert _card_row(card).balance_minor == 500000


def test_expired_certificates_are_never_handed_out(client, keys):
    import_codes_for("ARAY-CERT-1000", ["OLD-CERT-0001"], expires_at="2020-01-01T00:00:00Z")
    import_codes_for("ARAY-CERT-1000", ["NEW-CERT-0001"], expires_at="2099-01-01T00:00:00Z")
    card = issue_card(client, keys)
    assert exchange(client, keys, card).json()["certificate"]["code"] == "NEW-CERT-0001"
    assert_problem(exchange(client, keys, card), 409, "out_of_stock")


def test_a_cancelled_cards_exchange_is_refused(client, keys, card):
    cancelled = client.post(f"/v1/redemptions/{card.redemption_id}/cancel", headers=keys.header("loyalty"))
    assert cancelled.status_code == 200, cancelled.text
    assert_problem(exchange(client, keys, card), 409, "card_cancelled")


# --- expiry ----------------------------------------------------------------------------------------


def test_an_expired_card_is_refused_and_its_unused_balance_booked_as_breakage(
    client, keys, card, fixed_clock
):
    from service.cards.service import expire_cards
    from service.ledger.service import vat_included

    assert exchange(client, keys, card).status_code == 201
    expires_at = _card_row(card).expires_at
    fixed_clock["t"] = expires_at + timedelta(seconds=1)
    assert_problem(exchange(client, keys, card), 409, "card_expired")
    assert verify(client, keys, card).json()["status"] == "expired"
    with transaction() as s:
        result = expire_cards(s, expires_at + timedelta(seconds=1))
    assert (result.expired, result.breakage_minor) == (1, 400000)
    with transaction() as s:
        assert expire_cards(s, expires_at + timedelta(days=1)).expired == 0  # idempotent
    with new_session() as s:
        breakage = s.execute(text("SELECT * FROM reconciliation_records WHERE type = 'breakage'")).one()
        events = s.execute(text("SELECT event, reason FROM card_events")).all()
    assert (breakage.face_value_minor, breakage.cost_minor, breakage.card_id) == (400000, 0, card.card_id)
    assert (
        breakage.sku == "QAZAQ-GIFT-CARD" and breakage.partner_id is None and breakage.program_id is not None
    )
    assert breakage.vat_minor == vat_included(400000, breakage.vat_rate_bp)
    row = _card_row(card)
    assert (row.status, row.balance_minor) == ("expired", 0)
    assert events == [("expired", "unused balance 4000.00 KZT")]
    assert_problem(exchange(client, keys, card), 409, "card_expired")


def test_cards_not_yet_due_are_left_alone_by_the_expiry_job(client, keys, card):
    from service.cards.service import expire_cards

    with transaction() as s:
        assert expire_cards(s, datetime.now(UTC)).expired == 0
    assert _card_row(card).status == "active" and table_counts("card_events")["card_events"] == 0


def test_rewards_cards_expire_expires_due_cards_for_a_scheduler(client, keys, card):
    from typer.testing import CliRunner

    from service.cli import app

    with transaction() as s:
        s.execute(
            text("UPDATE cards SET expires_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": card.card_id},
        )
    try:
        result = CliRunner().invoke(app, ["cards", "expire"])
        again = CliRunner().invoke(app, ["cards", "expire"])
    finally:  # the CLI points logging at the runner's stream, which closes
        from service.kit.observability.logging import configure_logging

        configure_logging("INFO", json=True)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"expired": 1, "breakage_minor": 500000}
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"expired": 0, "breakage_minor": 0}
    assert table_counts("reconciliation_records")["reconciliation_records"] == 2  # the issue and one breakage


# --- block / unblock -------------------------------------------------------------------------------


def test_support_blocks_and_unblocks_a_card_with_an_audit_trail(client, keys, card):
    blocked = client.post(
        f"/v1/cards/by-redemption/{card.redemption_id}/block",
        json={"reason": "subscriber lost the phone"},
        headers=keys.header("support"),
    )
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["status"] == "blocked"
    assert_problem(exchange(client, keys, card), 423, "card_blocked")
    assert verify(client, keys, card).json()["status"] == "blocked"
    unblocked = client.post(
        f"/v1/cards/by-redemption/{card.redemption_id}/unblock",
        json={"reason": "phone found"},
        headers=keys.header("admin"),
    )
    assert unblocked.json()["status"] == "active"
    assert exchange(client, keys, card).status_code == 201
    details = client.get(
        f"/v1/cards/by-redemption/{card.redemption_id}", headers=keys.header("support")
    ).json()
    assert [(e["event"], e["reason"]) for e in details["events"]] == [
        ("blocked", "subscriber lost the phone"),
        ("unblocked", "phone found"),
    ]
    assert all(e["key_id"] for e in details["events"])
    assert details["events"][0]["key_id"] != details["events"][1]["key_id"]  # support, then admin
    assert [x["sku"] for x in details["exchanges"]] == ["ARAY-CERT-1000"]
    with new_session() as s:
        keys_used = s.execute(text("SELECT api_key_id FROM card_events ORDER BY id")).scalars().all()
    assert None not in keys_used


def test_blocking_needs_an_active_card_and_a_reason(client, keys, card):
    url = f"/v1/cards/by-redemption/{card.redemption_id}"
    assert_problem(
        client.post(url + "/unblock", json={"reason": "x"}, headers=keys.header("support")),
        409,
        "card_not_blocked",
    )
    assert_problem(
        client.post(url + "/block", json={"reason": "   "}, headers=keys.header("support")),
        422,
        "validation_error",
    )
    assert_problem(
        client.post(url + "/block", json={}, headers=keys.header("support")), 422, "validation_error"
    )
    assert (
        client.post(url + "/block", json={"reason": "fraud"}, headers=keys.header("support")).status_code
        == 200
    )
    assert_problem(
        client.post(url + "/block", json={"reason": "again"}, headers=keys.header("support")),
        409,
        "card_not_blockable",
    )
    assert table_counts("card_events")["card_events"] == 1


@pytest.mark.parametrize("role", ["partner", "loyalty", "finance"])
def test_only_support_and_admin_block_cards(client, keys, card, role):
    assert_problem(
        client.post(
            f"/v1/cards/by-redemption/{card.redemption_id}/block",
            json={"reason": "x"},
            headers=keys.header(role),
        ),
        403,
        "forbidden",
    )


def test_blocking_an_unknown_card_is_404(client, keys, card):
    assert_problem(
        client.post(
            "/v1/cards/by-redemption/00000000-0000-7000-8000-000000000000/block",
            json={"reason": "x"},
            headers=keys.header("support"),
        ),
        404,
        "card_not_found",
    )
    assert_problem(
        client.post(
            "/v1/cards/by-redemption/not-a-uuid/block", json={"reason": "x"}, headers=keys.header("support")
        ),
        422,
        "validation_error",
    )


# --- logs ------------------------------------------------------------------------------------------


@pytest.fixture
def captured_logs():
    from service.kit.observability.logging import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    yield stream
    configure_logging("INFO", json=True)


def test_card_numbers_pins_and_certificates_never_reach_the_logs(client, keys, card, captured_logs):
    certificate = exchange(client, keys, card).json()["certificate"]["code"]
    exchange(client, keys, card, key="log-replay")
    exchange(client, keys, card, key="log-replay")
    verify(client, keys, card)
    client.post(
        "/v1/cards/verify",
        json={"number": card.number[:-1] + "x", "pin": card.pin},
        headers=keys.header("partner"),
    )
    for _ in range(5):
        verify(client, keys, card, pin=card.wrong_pin)
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    # Timestamps, durations and request ids are dropped: their digits could match a 6-digit PIN by chance.
    output = json.dumps(
        [
            {k: v for k, v in line.items() if k not in ("timestamp", "duration_ms", "request_id")}
            for line in lines
        ],
        ensure_ascii=False,
    )
    wrong = [line for line in lines if line.get("event") == "card_wrong_pin"]
    assert len(wrong) == 5 and all(line["card_number"].endswith(card.number[-4:]) for line in wrong)
    for secret in (card.number, card.number[:12], card.pin, card.wrong_pin, certificate):
        assert secret not in output, f"{secret[:3]}… leaked into the logs"
