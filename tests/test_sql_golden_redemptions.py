"""Golden tests of the redemption path's SQL (service/redemptions/sql, service/cards/sql and the
ledger's record fragments they carry): each statement run against PostgreSQL, on state built through
the domain functions, with the rows and row counts it must give."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg import Connection, errors
from psycopg.rows import class_row, dict_row
from sqlalchemy.orm import Session

from service.cards import service as cards
from service.catalog.snapshot import get_snapshot
from service.kit.db.engine import driver, transaction
from service.kit.security.crypto import get_vault
from service.kit.values.ids import uuid7
from service.pools.service import take_code
from service.redemptions.schemas import RedemptionIn
from service.redemptions.service import (
    LIMIT_LOCK,
    TAKE_BUDGET,
    Reserved,
    Scope,
    price,
    redemption_statement,
)
from tests.conftest import import_codes_for
from tests.finance_helpers import almaty, redeem_at

NOW = almaty(2026, 3, 10, 12)


def _request(**overrides: Any) -> RedemptionIn:
    body: dict[str, Any] = {
        "program": "mobile-bonus",
        "tariff": "basic",
        "offer": "cinema-2000",
        "msisdn": "+77011234567",
        "points": 2000,
        "external_id": f"golden-{uuid.uuid4().hex}",
    }
    body.update(overrides)
    return RedemptionIn(**body)


def _reserve(
    session: Session, request: RedemptionIn, *, sandbox: bool = False
) -> tuple[Reserved, dict[str, Any]]:
    """Runs reserve.sql (composed for the request's shape) in the caller's transaction."""
    db = driver(session)
    snap = get_snapshot(session)
    priced = price(snap, request, scope=Scope(None, sandbox=sandbox or None), now=NOW)
    statement = redemption_statement(request, priced, uuid7(), api_key_id=None, now=NOW)
    row = db.cursor(row_factory=class_row(Reserved)).execute(statement.sql, statement.params).fetchone()
    assert row is not None
    return row, statement.params


def _count(db: Connection[Any], table: str, where: str = "true") -> int:
    row = db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def test_limit_lock_takes_the_subscribers_lock_and_returns_its_one_row(demo_catalog):
    with transaction() as session:
        assert driver(session).execute(LIMIT_LOCK, {"msisdn": "+77011234567"}).fetchall() == [("",)]


def test_reserve_a_pooled_code_writes_redemption_record_and_outbox_row(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 2)
    with transaction() as session:
        db = driver(session)
        row, params = _reserve(session, _request())
        assert row.within is True and row.inserted is True
        assert row.last4 is not None and len(row.last4) == 4 and row.expires_at is None
        redemption = db.cursor(row_factory=dict_row).execute("SELECT * FROM redemptions").fetchone()
        assert redemption is not None
        assert (redemption["id"], redemption["nominal_minor"], redemption["sandbox"]) == (
            params["id"],
            200000,
            False,
        )
        assert redemption["code_id"] is not None and redemption["card_id"] is None
        assert redemption["reward_last4"] == row.last4
        record = db.cursor(row_factory=dict_row).execute("SELECT * FROM reconciliation_records").fetchone()
        assert record is not None
        assert (record["type"], record["quantity"], record["face_value_minor"], record["cost_minor"]) == (
            "issue",
            1,
            200000,
            180000,
        )
        assert (record["vat_rate_bp"], record["vat_minor"], record["code_last4"]) == (1600, 27586, row.last4)
        assert record["redemption_id"] == params["id"] and record["card_id"] is None
        assert _count(db, "codes", "status = 'reserved'") == 1
        assert _count(db, "outbox") == 1


def test_reserve_refuses_a_duplicate_external_id_with_inserted_false(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 2)
    with transaction() as session:
        db = driver(session)
        request = _request()
        _reserve(session, request)
        again, _ = _reserve(session, request)
        assert again.within is True and again.last4 is not None and again.inserted is False
        assert _count(db, "redemptions") == 1 and _count(db, "reconciliation_records") == 1
        assert _count(db, "outbox") == 1


def test_reserve_past_the_daily_limit_says_not_within_and_takes_nothing(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 3)
    redeem_at(NOW, msisdn="+77011234567")  # cinema-2000: 2 a day
    redeem_at(NOW, msisdn="+77011234567")
    with transaction() as session:
        db = driver(session)
        row, _ = _reserve(session, _request())
        assert row == Reserved(within=False, last4=None, expires_at=None, inserted=False)
        assert _count(db, "codes", "status = 'available'") == 1 and _count(db, "redemptions") == 2


def test_reserve_on_an_empty_pool_gives_no_reward(demo_catalog):
    with transaction() as session:
        row, _ = _reserve(session, _request())
        assert row == Reserved(within=True, last4=None, expires_at=None, inserted=False)


def test_reserve_a_card_mints_it_and_books_its_issue(demo_catalog):
    with transaction() as session:
        db = driver(session)
        row, params = _reserve(session, _request(offer="gift-card-5000", points=5000))
        assert row.within and row.inserted and row.last4 == params["card_last4"]
        assert row.expires_at == params["card_expires_at"]
        card = db.execute("SELECT balance_minor, status, sandbox FROM cards").fetchall()
        assert card == [(500000, "active", False)]
        assert db.execute(
            "SELECT type, cost_minor, card_id IS NOT NULL FROM reconciliation_records"
        ).fetchall() == [("issue", 0, True)]


@pytest.mark.parametrize(("offer", "points"), [("cinema-2000", 2000), ("gift-card-5000", 5000)])
def test_reserve_in_the_sandbox_writes_no_record_and_takes_no_pooled_code(demo_catalog, offer, points):
    with transaction() as session:
        db = driver(session)
        row, params = _reserve(session, _request(offer=offer, points=points), sandbox=True)
        assert row.within and row.inserted and row.last4 is not None
        if offer == "cinema-2000":
            assert row.last4 == params["sandbox_last4"]
        assert db.execute("SELECT sandbox, code_id FROM redemptions").fetchall() == [(True, None)]
        assert _count(db, "reconciliation_records") == 0 and _count(db, "outbox") == 1
        assert _count(db, "cards", "sandbox") == (1 if offer == "gift-card-5000" else 0)


def test_take_budget_counts_the_programs_month_and_refuses_past_it(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 1)
    with transaction() as session:
        db = driver(session)
        _, params = _reserve(session, _request())
        assert db.execute(TAKE_BUDGET, params).rowcount == 1
        assert db.execute("SELECT month, spent_minor FROM program_budget_usage").fetchall() == [
            (params["budget_month"], 200000)
        ]
        # no redemption row (refused before): nothing taken
        db.execute(TAKE_BUDGET, {**params, "id": uuid7()})
        assert db.execute("SELECT spent_minor FROM program_budget_usage").fetchall() == [(200000,)]
    with pytest.raises(errors.CheckViolation) as refused:
        with transaction() as session:
            driver(session).execute(TAKE_BUDGET, {**params, "budget": 200000})
    assert refused.value.diag.constraint_name == "program_budget"


def test_mint_card_inserts_once_per_number_and_not_when_its_condition_is_false(demo_catalog):
    with transaction() as session:
        product = get_snapshot(session).products_by_sku["QAZAQ-GIFT-CARD"]
    params = {
        "product": product.id,
        "currency": "KZT",
        "nominal": 100,
        "now": NOW,
        **cards.new_card(get_vault(), validity_days=30, now=NOW).params(),
    }
    with transaction() as session:
        db = driver(session)
        assert db.execute(cards.mint_card_sql(when="false"), params).fetchall() == []
        minted = db.execute(cards.mint_card_sql(), params).fetchall()
        assert len(minted) == 1 and minted[0][1] == params["card_last4"]
        assert db.execute(cards.mint_card_sql(), params).fetchall() == []  # the number is taken
        assert db.execute("SELECT sandbox, balance_minor FROM cards").fetchall() == [(False, 100)]


def _card_of(redemption_id: uuid.UUID) -> Any:
    with transaction() as session:
        return cards.card_for_exchange(session, _card_id(redemption_id))


def _card_id(redemption_id: uuid.UUID) -> int:
    with transaction() as session:
        row = driver(session).execute(
            "SELECT card_id FROM redemptions WHERE id = %(id)s", {"id": redemption_id}
        )
        return int(row.fetchone()[0])  # type: ignore[index]


def test_debit_card_lowers_the_balance_and_exhausts_it_at_zero(demo_catalog):
    card_id = _card_id(redeem_at(NOW, offer="gift-card-5000", points=5000))
    with transaction() as session:
        db = driver(session)
        assert db.execute(cards.DEBIT_CARD, {"face": 100000, "id": card_id}).fetchall() == [
            (400000, "active")
        ]
        assert db.execute(cards.DEBIT_CARD, {"face": 400000, "id": card_id}).fetchall() == [(0, "exhausted")]
        assert db.execute(cards.DEBIT_CARD, {"face": 1, "id": -1}).rowcount == 0


def test_exchange_writes_the_exchange_and_its_record_in_one_statement(demo_catalog):
    import_codes_for("ARAY-CERT-1000", 1)
    redemption_id = redeem_at(NOW, offer="gift-card-5000", points=5000)
    card = _card_of(redemption_id)
    with transaction() as session:
        db = driver(session)
        snap = get_snapshot(session)
        product = snap.products_by_sku["ARAY-CERT-1000"]
        certificate = take_code(db, product.id, status="issued", now=NOW)
        assert certificate is not None
        exchange_id = uuid7()
        cards._write_exchange(
            db, snap, card, product, certificate, exchange_id, now=NOW, api_key_id=None, channel="online"
        )
        assert db.execute("SELECT id, amount_minor, channel FROM exchanges").fetchall() == [
            (exchange_id, 100000, "online")
        ]
        record = (
            db.cursor(row_factory=dict_row)
            .execute("SELECT * FROM reconciliation_records WHERE type = 'exchange'")
            .fetchone()
        )
        assert record is not None
        assert (record["face_value_minor"], record["channel"], record["card_id"]) == (
            100000,
            "online",
            card.id,
        )
        assert (record["code_last4"], record["redemption_id"]) == (certificate.last4, None)


def test_write_record_and_write_reversal(demo_catalog):
    from service.ledger import service as ledger

    import_codes_for("ARAY-CINEMA-2000", 1)
    redemption_id = redeem_at(NOW)
    with transaction() as session:
        db = driver(session)
        reversed_ = ledger.write_reversal(db, redemption_id, occurred_at=datetime(2026, 3, 11, tzinfo=UTC))
        assert reversed_ == 1
        assert db.execute(
            "SELECT type, quantity, face_value_minor, cost_minor, vat_minor FROM reconciliation_records"
            " ORDER BY id"
        ).fetchall() == [("issue", 1, 200000, 180000, 27586), ("cancel", -1, -200000, -180000, -27586)]
        assert ledger.write_reversal(db, uuid7(), occurred_at=NOW) == 0  # no issue record: nothing
        record_id = ledger.write_record(
            db,
            ledger.RecordType.BREAKAGE,
            ledger.Record(
                occurred_at=NOW,
                program_id=get_snapshot(session).programs["mobile-bonus"].id,
                tariff_id=None,
                offer_id=None,
                product_id=get_snapshot(session).products_by_sku["QAZAQ-GIFT-CARD"].id,
                sku="QAZAQ-GIFT-CARD",
                partner_id=None,
                currency="KZT",
                face_value_minor=1000,
                cost_minor=0,
                vat_rate_bp=1600,
                code_fingerprint=None,
                code_last4="1234",
                card_id=None,
            ),
        )
        assert db.execute(
            "SELECT type, quantity, face_value_minor, vat_minor, code_last4, redemption_id"
            " FROM reconciliation_records WHERE id = %(id)s",
            {"id": record_id},
        ).fetchall() == [("breakage", 1, 1000, 138, "1234", None)]
