"""Reconciliation records in the database: append-only, and booked into the right period."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.kit.db.engine import get_engine, transaction
from tests.finance_helpers import almaty, booked_periods, insert_record


def test_updating_a_record_is_refused_by_the_database(demo_catalog):
    record = insert_record(occurred_at=almaty(2026, 3, 5, 12))
    with pytest.raises(DBAPIError, match="append-only"):
        with transaction() as s:
            s.execute(
                text("UPDATE reconciliation_records SET face_value_minor = 1 WHERE id = :id"), {"id": record}
            )


def test_deleting_a_record_is_refused_by_the_database(demo_catalog):
    record = insert_record(occurred_at=almaty(2026, 3, 5, 12))
    with pytest.raises(DBAPIError, match="append-only"):
        with transaction() as s:
            s.execute(text("DELETE FROM reconciliation_records WHERE id = :id"), {"id": record})
    assert booked_periods() == {record: "2026-03"}


def test_truncate_still_works_for_the_test_fixtures(demo_catalog):
    insert_record(occurred_at=almaty(2026, 3, 5, 12))
    with get_engine().begin() as conn:
        conn.execute(text("TRUNCATE reconciliation_records, registry_entries"))
    assert booked_periods() == {}


def test_a_record_is_booked_in_the_month_it_happened_in_the_programs_time_zone(demo_catalog):
    # 23:30 on 31 March in Almaty (18:30 UTC) is March; 00:10 on 1 April there (19:10 UTC, still
    # 31 March) is April
    late_evening = insert_record(occurred_at=almaty(2026, 3, 31, 23, 30))
    just_after_midnight = insert_record(occurred_at=almaty(2026, 4, 1, 0, 10))  # 2026-03-31 19:10 UTC
    assert booked_periods() == {late_evening: "2026-03", just_after_midnight: "2026-04"}


def test_a_writer_cannot_choose_the_booked_period(demo_catalog):
    with transaction() as s:
        record = s.execute(
            text(
                "INSERT INTO reconciliation_records (type, occurred_at, program_id, product_id, sku,"
                " quantity, currency, face_value_minor, cost_minor, vat_rate_bp, vat_minor, booked_period)"
                " SELECT 'issue', :at, pg.id, p.id, p.sku, 1, 'KZT', 100, 0, 0, 0, DATE '2020-01-01'"
                " FROM products p, programs pg WHERE p.sku = 'ARAY-CINEMA-2000' AND pg.code = 'mobile-bonus'"
                " RETURNING id"
            ),
            {"at": almaty(2026, 3, 5)},
        ).scalar_one()
    assert booked_periods() == {record: "2026-03"}
