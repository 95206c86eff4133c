"""Invariants 1, 2 and 4 under parallel clients against a real server with a small pool."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import text

from service.kit.db.engine import new_session, transaction
from tests.conftest import import_codes_for, redemption_body, table_counts
from tests.harness.live import live_api


def _fire(
    base: str, key: str, bodies: list[dict], idempotency_keys: list[str], clients: int
) -> list[httpx.Response]:
    barrier = threading.Barrier(clients)
    chunks = [list(range(i, len(bodies), clients)) for i in range(clients)]

    def run(indexes: list[int]) -> list[httpx.Response]:
        with httpx.Client(base_url=base, timeout=60) as http:
            barrier.wait()
            return [
                http.post(
                    "/v1/redemptions",
                    json=bodies[i],
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_keys[i]},
                )
                for i in indexes
            ]

    with ThreadPoolExecutor(clients) as pool:
        return [r for batch in pool.map(run, chunks) for r in batch]


def test_400_redemptions_from_32_clients_drain_a_pool_of_200_exactly(keys):
    import_codes_for("ARAY-CINEMA-2000", 200)
    bodies = [redemption_body(msisdn=f"8701{i:07d}") for i in range(400)]
    with live_api(pool_size=5) as base:
        responses = _fire(base, keys.loyalty, bodies, [f"drain-{i}" for i in range(400)], clients=32)
    outcome = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert outcome == {(201, None): 200, (409, "out_of_stock"): 200}, outcome
    with new_session() as s:
        codes = s.execute(text("SELECT code_id FROM redemptions")).scalars().all()
        records = s.execute(
            text(
                "SELECT count(*) AS n, sum(face_value_minor) AS face, count(DISTINCT"
                " code_fingerprint) AS codes FROM reconciliation_records WHERE type = 'issue'"
            )
        ).one()
        reserved = s.execute(text("SELECT count(*) FROM codes WHERE status = 'reserved'")).scalar_one()
    assert len(codes) == len(set(codes)) == 200 and reserved == 200
    assert (records.n, records.face, records.codes) == (200, 200 * 200000, 200)
    assert table_counts("outbox")["outbox"] == 200
    assert {r.json()["reward"]["last4"] for r in responses if r.status_code == 201}  # last4 only, no code


def test_20_concurrent_requests_with_one_key_have_one_effect(keys):
    import_codes_for("ARAY-CINEMA-2000", 5)
    body = redemption_body()
    with live_api(pool_size=5) as base:
        responses = _fire(base, keys.loyalty, [body] * 20, ["same-key"] * 20, clients=20)
    created = [r for r in responses if r.status_code == 201]
    others = [r for r in responses if r.status_code != 201]
    assert created and all(r.json() == created[0].json() for r in created)
    assert all(r.status_code == 409 and r.json()["code"] == "idempotency_in_progress" for r in others)
    assert sum(1 for r in created if r.headers.get("idempotent-replayed") != "true") == 1
    assert table_counts("redemptions", "reconciliation_records", "outbox", "idempotency_keys") == {
        "redemptions": 1,
        "reconciliation_records": 1,
        "outbox": 1,
        "idempotency_keys": 1,
    }


def test_one_subscriber_racing_past_the_daily_limit_gets_exactly_the_limit(keys):
    import_codes_for("ARAY-CINEMA-2000", 20)
    bodies = [redemption_body(msisdn="87013334455") for _ in range(12)]
    with live_api(pool_size=5) as base:
        responses = _fire(base, keys.loyalty, bodies, [f"limit-{i}" for i in range(12)], clients=12)
    outcome = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert outcome == {(201, None): 2, (409, "limit_exceeded"): 10}, outcome


def test_parallel_redemptions_never_overspend_the_budget(keys):
    import_codes_for("ARAY-CINEMA-2000", 40)
    with transaction() as s:
        s.execute(text("UPDATE programs SET monthly_budget_minor = 10 * 200000 WHERE code = 'mobile-bonus'"))
    bodies = [redemption_body(msisdn=f"8702{i:07d}") for i in range(30)]
    with live_api(pool_size=5) as base:
        responses = _fire(base, keys.loyalty, bodies, [f"budget-{i}" for i in range(30)], clients=30)
    outcome = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert outcome == {(201, None): 10, (409, "budget_exceeded"): 20}, outcome
    with new_session() as s:
        assert s.execute(text("SELECT spent_minor FROM program_budget_usage")).scalar_one() == 10 * 200000
        assert s.execute(text("SELECT count(*) FROM codes WHERE status = 'reserved'")).scalar_one() == 10
