"""Invariants 1-3 for universal cards under parallel partners against a real server."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import text

from service.kit.db.engine import new_session
from tests.conftest import import_codes_for
from tests.harness.live import live_api
from tests.test_cards import issue_card


def test_30_concurrent_exchanges_against_a_card_worth_5_certificates_give_exactly_5(client, keys):
    import_codes_for("ARAY-CERT-1000", 40)
    card = issue_card(client, keys)  # 5000.00: five certificates of 1000.00
    barrier = threading.Barrier(30)

    def run(i: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=60) as http:
            barrier.wait()
            return http.post(
                "/v1/cards/exchanges",
                json={"number": card.number, "pin": card.pin, "sku": "ARAY-CERT-1000"},
                headers={"Authorization": f"Bearer {keys.partner}", "Idempotency-Key": f"race-{i}"},
            )

    with live_api(pool_size=5) as base, ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(run, range(30)))
    outcome = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert outcome == {(201, None): 5, (409, "card_exhausted"): 25}, outcome
    certificates = [r.json()["certificate"]["code"] for r in responses if r.status_code == 201]
    assert len(set(certificates)) == 5
    assert sorted(r.json()["card"]["balance"]["amount"] for r in responses if r.status_code == 201) == [
        "0.00",
        "1000.00",
        "2000.00",
        "3000.00",
        "4000.00",
    ]
    with new_session() as s:
        balance, status = s.execute(
            text("SELECT balance_minor, status FROM cards WHERE id = :id"), {"id": card.card_id}
        ).one()
        exchanges = s.execute(text("SELECT code_id, amount_minor FROM exchanges")).all()
        records = s.execute(
            text(
                "SELECT count(*), sum(face_value_minor), count(DISTINCT code_fingerprint)"
                " FROM reconciliation_records WHERE type = 'exchange'"
            )
        ).one()
        issued = s.execute(text("SELECT count(*) FROM codes WHERE status = 'issued'")).scalar_one()
    assert (balance, status) == (0, "exhausted")
    assert len(exchanges) == len({e.code_id for e in exchanges}) == 5
    assert sum(e.amount_minor for e in exchanges) == 500000  # never more than the nominal
    assert tuple(records) == (5, 500000, 5) and issued == 5
