"""Golden tests of the month close's SQL (service/ledger/sql): each statement run against PostgreSQL,
on records written through the domain functions (redemptions, a cancel, a close), with the rows and
row counts it must give. The record writers' statements are in test_sql_golden_redemptions.py."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from psycopg import Connection
from psycopg.rows import class_row, dict_row

from service.kit.db.engine import driver, transaction
from service.ledger import periods
from tests.conftest import import_codes_for
from tests.finance_helpers import almaty, cancel_at, now_utc, redeem_at

MARCH = date(2026, 3, 1)
APRIL = date(2026, 4, 1)


@pytest.fixture
def march(demo_catalog) -> int:
    """Three records of March (two issues, one of them cancelled in April, which books into March's
    next open month) and one of April; returns the program's id."""
    import_codes_for("ARAY-CINEMA-2000", 5)
    import_codes_for("KITAP-BOOKS-5000", 2)
    redeem_at(almaty(2026, 3, 2, 10))
    cancelled = redeem_at(almaty(2026, 3, 15, 12), offer="books-5000", points=5000)
    cancel_at(cancelled, almaty(2026, 3, 16, 9))
    redeem_at(almaty(2026, 4, 1, 0, 5))  # April in Almaty, still 31 March in UTC
    with transaction() as session:
        return periods.find_program(driver(session), "mobile-bonus").id


def _rows(db: Connection[Any], statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return db.cursor(row_factory=dict_row).execute(statement, params).fetchall()


def test_program_and_its_webhook(demo_catalog):
    with transaction() as session:
        db = driver(session)
        program = periods.find_program(db, "mobile-bonus")
        assert (program.code, program.timezone, program.currency) == ("mobile-bonus", "Asia/Almaty", "KZT")
        assert db.execute(periods.PROGRAM, {"code": "nope"}).fetchall() == []
        assert db.execute(periods.PROGRAM_WEBHOOK, {"program": program.id}).rowcount == 1
        assert db.execute(periods.PROGRAM_WEBHOOK, {"program": -1}).fetchall() == []
        assert db.execute(periods.ADVISORY_LOCK, {"class": periods.DOCS_LOCK, "key": 1}).rowcount == 1


def test_totals_by_product_by_type_and_late_records(march):
    params = {"program": march, "month": MARCH}
    with transaction() as session:
        db = driver(session)
        assert _rows(db, periods.TOTALS_BY_PRODUCT, params) == [
            {
                "sku": "ARAY-CINEMA-2000",
                "name": "Aray Cinema ticket voucher 2 000 ₸",
                "partner": "aray-cinema",
                "partner_name": "Aray Cinema",
                "currency": "KZT",
                "vat_rate_bp": 1600,
                "campaign_id": None,
                "campaign_name": None,
                "records": 1,
                "quantity": 1,
                "face_value_minor": 200000,
                "cost_minor": 180000,
                "vat_minor": 27586,
            },
            {
                "sku": "KITAP-BOOKS-5000",
                "name": "Kitap Books gift code 5 000 ₸",
                "partner": "kitap-books",
                "partner_name": "Kitap Books",
                "currency": "KZT",
                "vat_rate_bp": 1600,
                "campaign_id": None,
                "campaign_name": None,
                "records": 2,
                "quantity": 0,
                "face_value_minor": 0,
                "cost_minor": 0,
                "vat_minor": 0,
            },
        ]
        by_type = _rows(db, periods.TOTALS_BY_TYPE, params)
        assert [(t["type"], t["records"], t["quantity"], t["face_value_minor"]) for t in by_type] == [
            ("issue", 2, 2, 700000),
            ("cancel", 1, -1, -500000),
        ]
        assert db.execute(periods.LATE_RECORDS, params).fetchall() == [(0,)]
        assert db.execute(periods.LATE_RECORDS, {"program": march, "month": APRIL}).fetchall() == [(0,)]


def test_totals_by_product_gives_each_campaign_its_own_line_after_the_on_demand_one(client, keys):
    """A campaign's grants (no points debited) of a product sum on a line of their own, named by the
    campaign, after the product's on-demand line; a cancelled grant's cancel record nets on it."""
    from tests.test_campaigns import approved, run_all

    import_codes_for("ARAY-CINEMA-2000", 5)
    campaign = approved(client, keys, keys.approver, 2, name="Outage")
    run_all(campaign["id"])
    with transaction() as session:
        db = driver(session)
        grant, month = db.execute(
            "SELECT redemption_id, booked_period FROM reconciliation_records ORDER BY id LIMIT 1"
        ).fetchone() or (None, None)
    cancel_at(grant, now_utc())
    redeem_at(now_utc())
    with transaction() as session:
        db = driver(session)
        program = periods.find_program(db, "mobile-bonus").id
        rows = _rows(db, periods.TOTALS_BY_PRODUCT, {"program": program, "month": month})
    assert [
        (r["sku"], r["campaign_id"], r["campaign_name"], r["records"], r["quantity"], r["face_value_minor"])
        for r in rows
    ] == [
        ("ARAY-CINEMA-2000", None, None, 1, 1, 200000),
        ("ARAY-CINEMA-2000", campaign["id"], "Outage", 3, 1, 200000),
    ]


def test_a_close_numbers_and_stores_what_the_views_read(march):
    periods.close_period("mobile-bonus", MARCH, now=almaty(2026, 4, 2, 9), closed_by="golden")
    with transaction() as session:
        db = driver(session)
        (period_id,) = db.execute(periods.PERIOD_ID, {"program": march, "month": MARCH}).fetchone() or (None,)
        assert period_id is not None
        assert db.execute(periods.PERIOD_ID, {"program": march, "month": APRIL}).fetchall() == []
        assert db.execute(periods.NEXT_PERIOD_NUMBER, {}).fetchall() == [(2,)]
        with db.cursor(row_factory=class_row(periods.PeriodRow)) as cursor:
            row = cursor.execute(periods.PERIOD, {"program": march, "month": MARCH}).fetchone()
        assert row is not None and (row.status, row.act_number, row.registry_number) == (
            "closed",
            "A-000001",
            "R-000001",
        )
        assert row.closed_by == "golden" and row.record_count == 3 and row.totals is not None
        assert row.totals["records"] == 3
        closing = db.execute(periods.CLOSING_PERIOD, {"period": period_id}).fetchall()
        assert [c[:4] for c in closing] == [("closed", MARCH, "A-000001", "R-000001")]
        documents = _rows(db, periods.PERIOD_DOCUMENTS, {"period": period_id})
        assert [(d["kind"], d["number"]) for d in documents] == [
            ("act.pdf", "A-000001"),
            ("registry.csv", "R-000001"),
            ("registry.xlsx", "R-000001"),
        ]
        found = _rows(db, periods.FIND_DOCUMENT, {"program": march, "month": MARCH, "kind": "registry.csv"})
        assert len(found) == 1 and found[0]["filename"] == "registry-mobile-bonus-2026-03.csv"
        chunks = db.execute(periods.DOCUMENT_CHUNKS, {"document": found[0]["document_id"]}).fetchall()
        assert sum(len(c[0]) for c in chunks) == found[0]["size"]
        entries = db.execute(
            "SELECT number FROM registry_entries WHERE period_id = %(period)s ORDER BY number",
            {"period": period_id},
        ).fetchall()
        assert entries == [(1,), (2,), (3,)]
        # numbering twice numbers nothing
        params = {"period": period_id, "program": march, "month": MARCH}
        assert db.execute(periods.NUMBER_RECORDS, params).rowcount == 0


def test_the_writes_of_a_close(march):
    with transaction() as session:
        db = driver(session)
        (period_id,) = db.execute(
            periods.INSERT_PERIOD,
            {
                "program": march,
                "month": MARCH,
                "number": 7,
                "act_number": "A-000007",
                "registry_number": "R-000007",
                "closed_at": almaty(2026, 4, 2),
                "closed_by": "golden",
            },
        ).fetchone() or (None,)
        params = {"period": period_id, "program": march, "month": MARCH}
        assert db.execute(periods.NUMBER_RECORDS, params).rowcount == 3
        (document_id,) = db.execute(
            periods.INSERT_DOCUMENT,
            {
                "period": period_id,
                "kind": "registry.csv",
                "number": "R-000007",
                "filename": "r.csv",
                "content_type": "text/csv",
                "size": 6,
                "sha256": "00" * 32,
            },
        ).fetchone() or (None,)
        for seq, data in enumerate((b"abc", b"def")):
            assert (
                db.execute(
                    periods.INSERT_DOCUMENT_CHUNK, {"document": document_id, "seq": seq, "data": data}
                ).rowcount
                == 1
            )
        assert db.execute(periods.DOCUMENT_CHUNKS, {"document": document_id}).fetchall() == [
            (b"abc",),
            (b"def",),
        ]
        marked = db.execute(
            periods.MARK_CLOSED, {"totals": '{"records": 3}', "records": 3, "period": period_id}
        )
        assert marked.rowcount == 1
        assert db.execute(
            "SELECT status, record_count, totals FROM periods WHERE id = %(id)s", {"id": period_id}
        ).fetchall() == [("closed", 3, {"records": 3})]


def test_the_partner_reconciliations_statements(march):
    from service.ledger import reconciliation, routes

    with transaction() as session:
        db = driver(session)
        (partner,) = (
            db.cursor(row_factory=class_row(reconciliation.Partner))
            .execute(reconciliation.PARTNER, {"code": "kitap-books"})
            .fetchall()
        )
        assert (partner.code, partner.name) == ("kitap-books", "Kitap Books")
        assert db.execute(routes.PARTNER_ID, {"code": "kitap-books"}).fetchall() == [(partner.id,)]
        assert db.execute(routes.PARTNER_ID, {"code": "nope"}).fetchall() == []
        assert db.execute(routes.PRODUCT_EXISTS, {"sku": "KITAP-BOOKS-5000"}).fetchall() == [(1,)]
        assert db.execute(routes.PRODUCT_EXISTS, {"sku": "NOPE"}).fetchall() == []
        assert db.execute(reconciliation.PARTNER_CURRENCY, {"partner": partner.id}).fetchall() == [("KZT",)]
        assert db.execute(reconciliation.FIRST_PROGRAM_ZONE, {}).fetchall() == [("Asia/Almaty",)]
        # kitap's only code was cancelled: nothing net issued; aray's March and April codes are
        issued = db.cursor(row_factory=class_row(reconciliation.IssuedCode))
        assert (
            issued.execute(reconciliation.ISSUED_CODES, {"month": MARCH, "partner": partner.id}).fetchall()
            == []
        )
        aray = db.execute(routes.PARTNER_ID, {"code": "aray-cinema"}).fetchall()[0][0]
        codes = issued.execute(reconciliation.ISSUED_CODES, {"month": MARCH, "partner": aray}).fetchall()
        assert sorted((c.sku, c.face_value_minor, c.in_period) for c in codes) == [
            ("ARAY-CINEMA-2000", 200000, False),
            ("ARAY-CINEMA-2000", 200000, True),
        ]
        assert all(c.redemption_id is not None and c.issued_at is not None for c in codes)


def test_the_ledger_builds_no_links_the_http_layer_does(march):
    from service.ledger import routes

    periods.close_period("mobile-bonus", MARCH, now=almaty(2026, 4, 2, 9))
    period = periods.read_period("mobile-bonus", MARCH)
    assert [d.kind for d in period.documents] == ["act.pdf", "registry.csv", "registry.xlsx"]
    assert all("href" not in d for d in period.as_dict()["documents"])
    assert [d["href"] for d in routes.period_body(period)["documents"]] == [
        f"/v1/periods/2026-03/documents/{kind}?program=mobile-bonus"
        for kind in ("act.pdf", "registry.csv", "registry.xlsx")
    ]
