"""Month close: refusals, booking after a close, the documents and their checksums."""

from __future__ import annotations

import hashlib
import io
from datetime import date

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.kit.db.engine import new_session, transaction
from service.kit.http.errors import Problem
from service.ledger.periods import close_month, find_document, iter_document, read_period
from service.ledger.routes import period_body
from tests.conftest import import_codes_for
from tests.finance_helpers import (
    almaty,
    booked_periods,
    cancel_at,
    insert_record,
    minor,
    parse_csv,
    record_sums,
    redeem_at,
)

MARCH = date(2026, 3, 1)
AFTER_MARCH = almaty(2026, 4, 2, 9)


def _document(program: str, month: date, kind: str) -> bytes:
    doc = find_document(program, month, kind)
    data = b"".join(iter_document(doc.document_id))
    assert hashlib.sha256(data).hexdigest() == doc.sha256 and len(data) == doc.size
    return data


@pytest.fixture
def march(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 10)
    import_codes_for("KITAP-BOOKS-5000", 5)
    first = redeem_at(almaty(2026, 3, 2, 10))
    redeem_at(almaty(2026, 3, 15, 12), offer="books-5000", points=5000)
    cancelled = redeem_at(almaty(2026, 3, 31, 23, 50))
    cancel_at(cancelled, almaty(2026, 3, 31, 23, 55))
    redeem_at(almaty(2026, 4, 1, 0, 5))  # April in Almaty, though still 31 March in UTC
    return first


def test_a_month_that_has_not_ended_in_the_programs_time_zone_is_refused(march):
    with pytest.raises(Problem) as refused:
        close_month("mobile-bonus", MARCH, now=almaty(2026, 3, 31, 23, 59))
    assert refused.value.status == 409 and refused.value.code == "period_not_ended"
    assert read_period("mobile-bonus", MARCH).status == "open"


def test_an_unknown_program_is_a_404(march):
    with pytest.raises(Problem) as refused:
        close_month("no-such-program", MARCH, now=AFTER_MARCH)
    assert refused.value.status == 404 and refused.value.code == "unknown_program"


def test_closing_freezes_totals_equal_to_the_records_of_the_month(march):
    view = period_body(close_month("mobile-bonus", MARCH, now=AFTER_MARCH, closed_by="test"))
    assert (
        view["status"] == "closed"
        and view["act_number"] == "A-000001"
        and view["registry_number"] == "R-000001"
    )
    sums = record_sums(booked="2026-03")
    assert sums["records"] == 4 and view["record_count"] == 4
    (kzt,) = view["totals"]["by_currency"]
    assert minor(kzt["face_value"]["amount"]) == sums["face_value_minor"] == 200000 + 500000
    assert minor(kzt["vat"]["amount"]) == sums["vat_minor"]
    assert minor(kzt["cost"]["amount"]) == sums["cost_minor"] and kzt["quantity"] == sums["quantity"] == 2
    assert {t["type"]: t["records"] for t in view["totals"]["by_type"]} == {"issue": 3, "cancel": 1}


def test_the_registry_lists_every_record_of_the_period_numbered_with_its_checksum(march):
    view = period_body(close_month("mobile-bonus", MARCH, now=AFTER_MARCH))
    docs = {d["kind"]: d for d in view["documents"]}
    assert set(docs) == {"act.pdf", "registry.csv", "registry.xlsx"}
    rows = parse_csv(_document("mobile-bonus", MARCH, "registry.csv"))
    assert [r["line"] for r in rows] == ["1", "2", "3", "4"]
    assert {r["booked_period"] for r in rows} == {"2026-03"}
    assert sum(minor(r["face_value"]) for r in rows) == record_sums(booked="2026-03")["face_value_minor"]
    assert all(len(r["code_fingerprint"]) == 64 and len(r["code_last4"]) == 4 for r in rows)
    assert "ARAY-CINEMA-2000-T" not in _document("mobile-bonus", MARCH, "registry.csv").decode()
    assert (
        docs["registry.csv"]["sha256"]
        == hashlib.sha256(_document("mobile-bonus", MARCH, "registry.csv")).hexdigest()
    )


def test_the_registry_xlsx_has_the_same_records_and_a_totals_row(march):
    from openpyxl import load_workbook

    close_month("mobile-bonus", MARCH, now=AFTER_MARCH)
    sheet = load_workbook(
        io.BytesIO(_document("mobile-bonus", MARCH, "registry.xlsx")), read_only=True
    ).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0].startswith("Реестр № R-000001")
    header = rows[2]
    data, total = rows[3:-1], rows[-1]
    face = header.index("Номинал")
    assert [r[0] for r in data] == [1, 2, 3, 4]
    assert total[1] == "Итого"
    cents = sum(round(r[face] * 100) for r in data)  # openpyxl reads numbers as float: compare in tiyn
    assert cents == round(total[face] * 100) == record_sums(booked="2026-03")["face_value_minor"]


def test_the_registry_xlsx_prints_landscape_one_page_wide_with_the_header_on_every_page(march):
    from openpyxl import load_workbook

    close_month("mobile-bonus", MARCH, now=AFTER_MARCH)
    sheet = load_workbook(io.BytesIO(_document("mobile-bonus", MARCH, "registry.xlsx"))).active
    header = 3  # two preamble lines, then the column titles
    assert sheet.cell(header, 2).value == "Номер документа"
    assert sheet.page_setup.orientation == "landscape" and sheet.page_setup.paperSize == 9
    assert sheet.sheet_properties.pageSetUpPr.fitToPage is True
    assert (sheet.page_setup.fitToWidth, sheet.page_setup.fitToHeight) == (1, 0)  # 0: as many tall as needed
    assert sheet.print_title_rows == f"${header}:${header}"
    assert sheet.freeze_panes == f"A{header + 1}"


def test_closing_twice_returns_the_same_documents(march):
    first = period_body(close_month("mobile-bonus", MARCH, now=AFTER_MARCH))
    redeem_at(almaty(2026, 4, 3))
    second = period_body(close_month("mobile-bonus", MARCH, now=almaty(2026, 5, 1, 9)))
    assert second == first
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM periods")).scalar_one() == 1


def test_an_event_dated_inside_a_closed_month_is_booked_in_the_next_open_one(march):
    close_month("mobile-bonus", MARCH, now=AFTER_MARCH)
    late = insert_record(occurred_at=almaty(2026, 3, 20, 12))  # e.g. a partner's late exchange
    assert booked_periods()[late] == "2026-04"
    close_month("mobile-bonus", date(2026, 4, 1), now=almaty(2026, 5, 1, 0, 1))
    later = insert_record(occurred_at=almaty(2026, 3, 25, 12))
    assert booked_periods()[later] == "2026-05"
    april = period_body(read_period("mobile-bonus", date(2026, 4, 1)))
    assert april["totals"]["late_records"] == 1 and april["record_count"] == 2


def test_a_cancel_after_the_close_reverses_in_the_next_period(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 2)
    issued = redeem_at(almaty(2026, 3, 30, 12))
    close_month("mobile-bonus", MARCH, now=AFTER_MARCH)
    cancel_at(issued, almaty(2026, 4, 2, 10))
    assert sorted(booked_periods().values()) == ["2026-03", "2026-04"]
    assert record_sums(booked="2026-03")["face_value_minor"] == 200000
    assert record_sums(booked="2026-04")["face_value_minor"] == -200000


def test_a_closed_period_cannot_be_reopened_changed_or_deleted(march):
    close_month("mobile-bonus", MARCH, now=AFTER_MARCH)
    for statement in (
        "UPDATE periods SET status = 'closing'",
        "DELETE FROM periods",
        "UPDATE periods SET totals = '{}'::jsonb",
        "DELETE FROM period_documents",
        "UPDATE period_document_chunks SET data = 'x'",
    ):
        with pytest.raises(DBAPIError, match="never change|cannot be reopened"):
            with transaction() as s:
                s.execute(text(statement))
    assert read_period("mobile-bonus", MARCH).status == "closed"


def test_periods_are_closed_per_program(march):
    close_month("mobile-bonus", MARCH, now=AFTER_MARCH)
    other = insert_record(occurred_at=almaty(2026, 3, 20), program="home-internet")
    assert booked_periods()[other] == "2026-03"
    assert read_period("home-internet", MARCH).status == "open"


def test_an_empty_month_closes_with_zero_totals(demo_catalog):
    view = period_body(close_month("business", date(2026, 1, 1), now=AFTER_MARCH))
    assert view["record_count"] == 0 and view["totals"]["by_currency"] == []
    assert parse_csv(_document("business", date(2026, 1, 1), "registry.csv")) == []


def test_document_numbers_are_sequential_across_closes(march):
    numbers = [close_month(p, MARCH, now=AFTER_MARCH).act_number for p in ("mobile-bonus", "home-internet")]
    assert numbers == ["A-000001", "A-000002"]
