"""Golden tests of the cards' SQL (service/cards/sql) and of the statements that read and change a
redemption after it is made (service/redemptions/sql): each run against PostgreSQL, on state built
through the domain functions, with the rows and row counts it must give."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from psycopg import Connection
from psycopg.rows import class_row

from service.cards import service as cards
from service.catalog.snapshot import get_snapshot
from service.kit.db.engine import driver, transaction
from service.kit.security.crypto import get_vault
from service.redemptions import service as redemptions
from tests.conftest import import_codes_for
from tests.finance_helpers import almaty, redeem_at

NOW = almaty(2026, 3, 10, 12)


@pytest.fixture
def card_redemption(demo_catalog) -> uuid.UUID:
    return redeem_at(NOW, offer="gift-card-5000", points=5000, msisdn="+77011234567")


def _card_id(db: Connection[Any], redemption_id: uuid.UUID) -> int:
    row = db.execute("SELECT card_id FROM redemptions WHERE id = %(id)s", {"id": redemption_id}).fetchone()
    assert row is not None
    return int(row[0])


def _cards(db: Connection[Any], statement: str, params: dict[str, Any]) -> list[cards.Card]:
    return db.cursor(row_factory=class_row(cards.Card)).execute(statement, params).fetchall()


def test_card_by_number_by_id_and_by_redemption(card_redemption):
    with transaction() as session:
        db = driver(session)
        card_id = _card_id(db, card_redemption)
        fingerprint = db.execute("SELECT number_fingerprint FROM cards").fetchall()[0][0]
        for statement, params in (
            (cards.CARD_BY_NUMBER, {"fp": fingerprint}),
            (cards.CARD_BY_ID, {"id": card_id}),
            (cards.CARD_BY_REDEMPTION, {"rid": card_redemption}),
            (cards.CARD_BY_REDEMPTION_LOCKED, {"rid": card_redemption}),
        ):
            (card,) = _cards(db, statement, params)
            assert (card.id, card.redemption_id, card.balance_minor, card.nominal_minor) == (
                card_id,
                card_redemption,
                500000,
                500000,
            )
            assert card.status == "active" and card.program_id is not None and card.external_id
        assert _cards(db, cards.CARD_BY_NUMBER, {"fp": b"\0" * 32}) == []
        assert _cards(db, cards.CARD_BY_ID, {"id": -1}) == []
        assert _cards(db, cards.CARD_BY_REDEMPTION, {"rid": uuid.uuid4()}) == []


def test_a_sandbox_card_is_no_card_by_number_nor_by_id(demo_catalog):
    from service.redemptions.schemas import RedemptionIn

    with transaction() as session:
        redemptions.redeem(
            session,
            RedemptionIn(
                program="mobile-bonus",
                tariff="basic",
                offer="gift-card-5000",
                points=5000,
                msisdn="+77011234567",
                external_id="sandbox-card",
            ),
            scope=redemptions.Scope(None, sandbox=True),
            api_key_id=None,
            now=NOW,
        )
    with transaction() as session:
        db = driver(session)
        card_id, fingerprint = db.execute(
            "SELECT id, number_fingerprint FROM cards WHERE sandbox"
        ).fetchall()[0]
        assert _cards(db, cards.CARD_BY_NUMBER, {"fp": fingerprint}) == []
        assert _cards(db, cards.CARD_BY_ID, {"id": card_id}) == []


def test_card_use_event_status_and_cancel(card_redemption):
    with transaction() as session:
        db = driver(session)
        card_id = _card_id(db, card_redemption)
        for statement in (cards.CARD_USE, cards.CARD_USE_LOCKED):
            assert db.execute(statement, {"id": card_id}).fetchall() == [("active", 500000, 500000)]
        params = {"card": card_id, "event": "blocked", "reason": "golden", "key": None, "now": NOW}
        assert db.execute(cards.CARD_EVENT, params).rowcount == 1
        assert db.execute(cards.SET_STATUS, {"status": "blocked", "id": card_id}).rowcount == 1
        assert db.execute(cards.EVENTS_OF_CARD, {"id": card_id}).fetchall() == [
            ("blocked", "golden", None, NOW)
        ]
        assert db.execute(cards.CANCEL_CARD, {"id": card_id}).rowcount == 1
        assert db.execute(cards.CARD_USE, {"id": card_id}).fetchall() == [("cancelled", 0, 500000)]


def test_an_exchange_is_listed_and_its_certificate_revealed_to_its_partner_only(card_redemption):
    import_codes_for("ARAY-CERT-1000", 1)
    with transaction() as session:
        db = driver(session)
        card = cards.card_for_exchange(session, _card_id(db, card_redemption))
        product = get_snapshot(session).products_by_sku["ARAY-CERT-1000"]
        result = cards.exchange_online(session, card, product, now=NOW)
        exchanges = db.execute(cards.EXCHANGES_OF_CARD, {"id": card.id}).fetchall()
        assert exchanges == [
            (
                result.out.id,
                "ARAY-CERT-1000",
                "aray-cinema",
                100000,
                result.out.certificate.last4,
                NOW,
                "online",
            )
        ]
        (certificate,) = db.execute(
            cards.CERTIFICATE, {"id": result.out.id, "partner": "aray-cinema"}
        ).fetchall()
        code_enc, _, key_id = certificate
        assert get_vault().decrypt(code_enc, b"code", key_id) == result.code
        assert db.execute(cards.CERTIFICATE, {"id": result.out.id, "partner": "kitap-books"}).fetchall() == []


def test_expire_cards_takes_the_due_ones_up_to_the_limit(demo_catalog):
    first = redeem_at(NOW, offer="gift-card-5000", points=5000)
    redeem_at(NOW, offer="gift-card-5000", points=5000)
    with transaction() as session:
        db = driver(session)
        assert db.execute(cards.EXPIRE_CARDS, {"now": NOW, "limit": 10}).fetchall() == []  # none due
        later = NOW + timedelta(days=400)
        rows = db.cursor(row_factory=class_row(cards.ExpiredCard)).execute(
            cards.EXPIRE_CARDS, {"now": later, "limit": 1}
        )
        (expired,) = rows.fetchall()
        assert expired.unused == 500000 and expired.redemption_id is not None and expired.sandbox is False
        assert db.execute(cards.EXPIRE_CARDS, {"now": later, "limit": 10}).rowcount == 1
        assert db.execute(cards.EXPIRE_CARDS, {"now": later, "limit": 10}).rowcount == 0
        assert db.execute(
            "SELECT count(*) FROM cards WHERE status = 'expired' AND balance_minor = 0"
        ).fetchall() == [(2,)]
    assert first is not None


def test_redemption_read_cancel_resend_and_budget_release(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 1)
    redemption_id = redeem_at(NOW, msisdn="+77011234567")
    with transaction() as session:
        db = driver(session)
        read = db.cursor(row_factory=class_row(redemptions.RedemptionRow))
        (row,) = read.execute(redemptions._BY_ID, {"id": redemption_id}).fetchall()
        assert (row.id, row.status, row.resend_count, row.nominal_minor, row.has_link) == (
            redemption_id,
            "accepted",
            0,
            200000,
            True,
        )
        assert row.code_id is not None and row.card_id is None and row.sandbox is False
        assert read.execute(redemptions._BY_ID_LOCKED, {"id": redemption_id}).fetchall() == [row]
        assert read.execute(redemptions._BY_ID, {"id": uuid.uuid4()}).fetchall() == []
        assert db.execute(redemptions.MARK_RESENT, {"send": 1, "now": NOW, "id": redemption_id}).rowcount == 1
        db.execute(
            "UPDATE redemptions SET status = 'failed', status_reason = 'x' WHERE id = %(id)s",
            {"id": redemption_id},
        )
        db.execute(redemptions.MARK_RESENT, {"send": 2, "now": NOW, "id": redemption_id})
        assert db.execute(
            "SELECT status, status_reason, resend_count FROM redemptions WHERE id = %(id)s",
            {"id": redemption_id},
        ).fetchall() == [("accepted", None, 2)]
        assert db.execute(redemptions.MARK_CANCELLED, {"id": redemption_id, "now": NOW}).rowcount == 1
        assert db.execute(
            "SELECT status, status_reason FROM redemptions WHERE id = %(id)s", {"id": redemption_id}
        ).fetchall() == [("cancelled", "cancelled by request")]
        program = get_snapshot(session).programs["mobile-bonus"]
        month = NOW.date().replace(day=1)
        params = {"amount": 200000, "program": program.id, "month": month}
        assert db.execute(redemptions.RELEASE_BUDGET, params).rowcount == 1
        assert db.execute("SELECT spent_minor FROM program_budget_usage").fetchall() == [(0,)]
        assert (
            db.execute(redemptions.RELEASE_BUDGET, {**params, "month": month.replace(month=4)}).rowcount == 0
        )
