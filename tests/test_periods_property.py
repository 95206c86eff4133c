"""Property (hypothesis): whatever sequence of issues, cancellations, card exchanges and card expiries
happens across a month boundary, closing the month gives an act whose totals equal the registry's sum
equal the sum of the records booked into the month, to the tiyn; the period cannot be reopened; a late
event dated inside the closed month lands in the next period (and in that period's documents).

Issues and cancellations go through the redemption domain functions, exchanges and expiries through
the cards engineer's `service.cards.service.exchange` / `expire_cards` — all with an explicit `now`."""

from __future__ import annotations

import io
import re
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.kit.db.engine import get_engine, new_session, transaction
from service.kit.http.errors import Problem
from service.ledger.periods import close_month, find_document, iter_document
from service.ledger.routes import period_body
from tests.conftest import import_codes_for
from tests.finance_helpers import almaty, cancel_at, minor, parse_csv, record_sums, redeem_at

MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)
START = almaty(2026, 3, 29, 8)  # events run from here across the March/April boundary (Almaty time)
OFFERS = {
    "cinema": ("cinema-2000", "basic", 2000),
    "books": ("books-5000", "basic", 5000),
    "card": ("gift-card-5000", "unlimited", 5000),
}
CERTS = {"ARAY-CERT-1000": "aray-cinema", "KITAP-CERT-2500": "kitap-books"}

step = st.one_of(
    st.tuples(st.just("issue"), st.sampled_from(sorted(OFFERS))),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
    st.tuples(st.just("exchange"), st.integers(0, 30), st.sampled_from(sorted(CERTS))),
    st.tuples(st.just("expire"), st.integers(0, 30)),
)
steps = st.lists(st.tuples(st.integers(1, 600), step), min_size=1, max_size=14)  # (minutes later, step)


def _fresh_state() -> None:
    with get_engine().begin() as conn:
        conn.execute(
            text(
                "TRUNCATE reconciliation_records, periods, period_documents, period_document_chunks,"
                " redemptions, cards, codes, outbox, program_budget_usage RESTART IDENTITY CASCADE"
            )
        )
    import_codes_for("ARAY-CINEMA-2000", 20)
    import_codes_for("KITAP-BOOKS-5000", 20)
    for sku in CERTS:
        import_codes_for(sku, 20)


def _card_credentials(redemption_id) -> tuple[str, str]:
    from service.kit.security.crypto import get_vault

    with new_session() as s:
        number_enc, pin_enc = s.execute(
            text(
                "SELECT c.number_enc, c.pin_enc FROM cards c JOIN redemptions r"
                " ON r.card_id = c.id WHERE r.id = :id"
            ),
            {"id": redemption_id},
        ).one()
    vault = get_vault()
    return vault.decrypt(bytes(number_enc), b"card-number"), vault.decrypt(bytes(pin_enc), b"card-pin")


def _run(sequence) -> None:
    from service.cards.errors import CommittedRefusal
    from service.cards.service import exchange, expire_cards

    now = START
    issued: list[tuple[str, object]] = []
    for minutes, (kind, *args) in sequence:
        now += timedelta(minutes=minutes)
        try:
            if kind == "issue":
                offer, tariff, points = OFFERS[args[0]]
                issued.append((args[0], redeem_at(now, offer=offer, tariff=tariff, points=points)))
            elif not issued:
                continue
            elif kind == "cancel":
                cancel_at(issued[args[0] % len(issued)][1], now)
            else:
                cards = [rid for what, rid in issued if what == "card"]
                if not cards:
                    continue
                redemption_id = cards[args[0] % len(cards)]
                if kind == "exchange":
                    number, pin = _card_credentials(redemption_id)
                    with transaction() as session:
                        exchange(
                            session, number, pin, args[1], partner=CERTS[args[1]], now=now, api_key_id=None
                        )
                else:
                    with transaction() as session:
                        session.execute(
                            text(
                                "UPDATE cards SET expires_at = :at WHERE id = (SELECT card_id FROM"
                                " redemptions WHERE id = :id) AND status = 'active'"
                            ),
                            {"at": now - timedelta(seconds=1), "id": redemption_id},
                        )
                        expire_cards(session, now)
        except (Problem, CommittedRefusal):
            pass  # a refusal (not cancellable, balance too low, card expired...) writes nothing


def _act_total_face_value(program: str, month: date) -> int:
    from pypdf import PdfReader

    doc = find_document(program, month, "act.pdf")
    pdf = PdfReader(io.BytesIO(b"".join(iter_document(doc.document_id))))
    text_ = "\n".join(p.extract_text() for p in pdf.pages).replace("\u202f", "")
    match = re.search(r"Итого \(KZT\)\s*(-?\d+)\s+(-?[\d]+,\d\d)", text_)
    if match is None:
        assert "Итого (KZT)" not in text_
        return 0
    return minor(match.group(2).replace(",", "."))


def _registry_sums(program: str, month: date) -> dict[str, int]:
    doc = find_document(program, month, "registry.csv")
    rows = parse_csv(b"".join(iter_document(doc.document_id)))
    assert [int(r["line"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["booked_period"] for r in rows} <= {f"{month:%Y-%m}"}
    return {
        "records": len(rows),
        "quantity": sum(int(r["quantity"]) for r in rows),
        **{
            f"{k}_minor": sum(minor(r[col]) for r in rows)
            for k, col in (("face_value", "face_value"), ("cost", "cost"), ("vat", "vat_amount"))
        },
    }


def _assert_documents_match_records(view: dict, month: date) -> None:
    records = record_sums(booked=f"{month:%Y-%m}")
    registry = _registry_sums("mobile-bonus", month)
    assert registry == records
    totals = view["totals"]
    frozen = {
        "records": totals["records"],
        "quantity": 0,
        "face_value_minor": 0,
        "cost_minor": 0,
        "vat_minor": 0,
    }
    for line in totals["by_currency"]:
        frozen["quantity"] += line["quantity"]
        for key in ("face_value", "cost", "vat"):
            frozen[f"{key}_minor"] += minor(line[key]["amount"])
    assert frozen == records
    assert _act_total_face_value("mobile-bonus", month) == records["face_value_minor"]


@pytest.mark.usefixtures("demo_catalog")
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=steps)
@example(
    sequence=[
        (10, ("issue", "card")),
        (10, ("issue", "cinema")),
        (10, ("exchange", 0, "ARAY-CERT-1000")),
        (10, ("cancel", 1)),
        (4000, ("exchange", 0, "KITAP-CERT-2500")),
        (10, ("expire", 0)),
        (5, ("issue", "books")),
    ]
)
def test_closing_documents_always_match_the_records_to_the_tiyn(sequence):
    _fresh_state()
    _run(sequence)
    march = period_body(close_month("mobile-bonus", MARCH, now=almaty(2026, 4, 1, 0, 0)))
    _assert_documents_match_records(march, MARCH)

    with pytest.raises(DBAPIError):  # reopening is impossible
        with transaction() as s:
            s.execute(text("UPDATE periods SET status = 'closing'"))
    with pytest.raises(DBAPIError):
        with transaction() as s:
            s.execute(text("DELETE FROM periods"))

    before = record_sums(booked="2026-03")
    late = redeem_at(almaty(2026, 3, 31, 23, 59))  # an event dated inside the closed month, written late
    assert record_sums(booked="2026-03") == before
    with new_session() as s:
        assert (
            s.execute(
                text(
                    "SELECT to_char(booked_period, 'YYYY-MM') FROM reconciliation_records"
                    " WHERE redemption_id = :id"
                ),
                {"id": late},
            ).scalar_one()
            == "2026-04"
        )
    assert (
        period_body(close_month("mobile-bonus", MARCH, now=almaty(2026, 5, 2))) == march
    )  # same documents again

    april = period_body(close_month("mobile-bonus", APRIL, now=almaty(2026, 5, 1, 0, 0)))
    _assert_documents_match_records(april, APRIL)
    assert april["totals"]["late_records"] >= 1


COVERING = [
    (10, ("issue", "card")),
    (10, ("issue", "cinema")),
    (10, ("exchange", 0, "ARAY-CERT-1000")),
    (10, ("cancel", 1)),
    (4000, ("exchange", 0, "KITAP-CERT-2500")),
    (10, ("expire", 0)),
]


def test_the_steps_write_every_record_type_on_both_sides_of_the_boundary(demo_catalog):
    _fresh_state()
    _run(COVERING)
    with new_session() as s:
        written = set(
            s.execute(
                text("SELECT type, to_char(booked_period, 'YYYY-MM') FROM reconciliation_records")
            ).all()
        )
    assert {t for t, _ in written} == {"issue", "cancel", "exchange", "breakage"}
    assert {m for _, m in written} == {"2026-03", "2026-04"}
