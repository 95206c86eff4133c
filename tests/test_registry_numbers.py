"""The registry's record numbers (`document_number`, RR-...): 1, 2, 3, ... per program with no gap,
whatever was refused or rolled back on the way. Record ids come from a sequence and do have gaps."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.catalog.snapshot import invalidate_snapshot
from service.kit.db.engine import new_session, transaction
from service.ledger.periods import close_month, find_document, iter_document
from service.redemptions.schemas import RedemptionIn
from service.redemptions.service import Scope, redeem
from tests.conftest import assert_problem, import_codes_for, post_redemption
from tests.finance_helpers import almaty, parse_csv, redeem_at

MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)


def _numbers(program: str, month: date) -> list[int]:
    doc = find_document(program, month, "registry.csv")
    rows = parse_csv(b"".join(iter_document(doc.document_id)))
    assert all(r["document_number"].startswith("RR-") for r in rows)
    return [int(r["document_number"].removeprefix("RR-")) for r in rows]


def _record_ids() -> list[int]:
    with new_session() as s:
        return list(s.execute(text("SELECT id FROM reconciliation_records ORDER BY id")).scalars())


class Refused(Exception):
    pass


def test_a_rolled_back_redemption_leaves_no_gap_in_the_registry(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 5)
    redeem_at(almaty(2026, 3, 2, 10))
    with pytest.raises(Refused), transaction() as session:  # its record's id drawn, then rolled back
        redeem(
            session,
            RedemptionIn(
                program="mobile-bonus",
                tariff="basic",
                offer="cinema-2000",
                points=2000,
                msisdn="87010000009",
                external_id="rolled-back",
            ),
            scope=Scope(None),
            api_key_id=None,
            now=almaty(2026, 3, 3, 10),
        )
        raise Refused
    redeem_at(almaty(2026, 3, 4, 10))
    ids = _record_ids()
    assert ids[1] - ids[0] > 1  # the ids have a gap: the sequence value of the rolled-back record
    close_month("mobile-bonus", MARCH, now=almaty(2026, 4, 2, 9))
    assert _numbers("mobile-bonus", MARCH) == [1, 2]


def test_a_request_the_budget_refuses_uses_up_no_registry_number(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 5)
    with transaction() as s:
        s.execute(text("UPDATE programs SET monthly_budget_minor = 300000 WHERE code = 'mobile-bonus'"))
    invalidate_snapshot()
    assert post_redemption(client, keys, msisdn="87010000001").status_code == 201
    # Refused at COMMIT, after the redemption's statement drew its record's id.
    assert_problem(post_redemption(client, keys, msisdn="87010000002"), 409, "budget_exceeded")
    with transaction() as s:
        s.execute(text("UPDATE programs SET monthly_budget_minor = NULL WHERE code = 'mobile-bonus'"))
    invalidate_snapshot()
    assert post_redemption(client, keys, msisdn="87010000003").status_code == 201
    ids = _record_ids()
    assert ids[1] - ids[0] > 1
    now = datetime.now(UTC)
    month = date(now.year, now.month, 1)
    after = datetime(now.year + (now.month == 12), now.month % 12 + 1, 3, tzinfo=UTC)
    close_month("mobile-bonus", month, now=after)
    assert _numbers("mobile-bonus", month) == [1, 2]


def test_numbers_go_on_across_a_programs_periods_and_start_at_one_for_each_program(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 6)
    for day in (2, 3, 4):
        redeem_at(almaty(2026, 3, day, 10))
    redeem_at(almaty(2026, 3, 5, 10), program="home-internet", tariff="home-100", points=2200)
    for day in (2, 3):
        redeem_at(almaty(2026, 4, day, 10))
    close_month("mobile-bonus", MARCH, now=almaty(2026, 5, 2, 9))
    close_month("home-internet", MARCH, now=almaty(2026, 5, 2, 9))
    close_month("mobile-bonus", APRIL, now=almaty(2026, 5, 2, 9))
    assert _numbers("mobile-bonus", MARCH) == [1, 2, 3]
    assert _numbers("mobile-bonus", APRIL) == [4, 5]
    assert _numbers("home-internet", MARCH) == [1]


def test_a_record_of_an_open_period_has_no_registry_number_yet(client, keys, demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 2)
    redeem_at(almaty(2026, 3, 2, 10))
    export = client.get("/v1/reconciliation/records?program=mobile-bonus", headers=keys.header("finance"))
    assert [r["document_number"] for r in parse_csv(export.content)] == [""]
    close_month("mobile-bonus", MARCH, now=almaty(2026, 4, 2, 9))
    export = client.get("/v1/reconciliation/records?program=mobile-bonus", headers=keys.header("finance"))
    assert [r["document_number"] for r in parse_csv(export.content)] == ["RR-0000000001"]


def test_registry_numbers_never_change(demo_catalog):
    import_codes_for("ARAY-CINEMA-2000", 2)
    redeem_at(almaty(2026, 3, 2, 10))
    close_month("mobile-bonus", MARCH, now=almaty(2026, 4, 2, 9))
    for statement in ("UPDATE registry_entries SET number = 7", "DELETE FROM registry_entries"):
        with pytest.raises(DBAPIError, match="registry numbers never change"), transaction() as s:
            s.execute(text(statement))
