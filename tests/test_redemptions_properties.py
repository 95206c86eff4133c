"""Random sequences of redeem / cancel / resend keep invariants 1, 2 and 4 (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from service.kit.db.engine import new_session

OFFERS = {"code": ("cinema-2000", "unlimited", 1600), "card": ("gift-card-5000", "basic", 5000)}
PHONES = ["87010000001", "87010000002", "87010000003"]

redeem = st.tuples(st.just("redeem"), st.integers(0, 5), st.sampled_from(sorted(OFFERS)), st.integers(0, 2))
cancel = st.tuples(st.just("cancel"), st.integers(0, 9))
resend = st.tuples(st.just("resend"), st.integers(0, 9))


def _reset(services) -> object:
    from catalog import DEMO_CATALOG
    from catalog.loader import load_catalog
    from service.auth.service import create_key
    from service.catalog.service import apply_catalog
    from service.kit.db.engine import Base, get_engine, transaction
    from tests.conftest import Keys, import_codes_for  # noqa: F401

    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    with transaction() as s:
        apply_catalog(s, load_catalog(DEMO_CATALOG))
        key = create_key(s, role="loyalty", name="prop", programs=["mobile-bonus"]).key
    import_codes_for("ARAY-CINEMA-2000", 4)
    return {"Authorization": f"Bearer {key}"}


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(st.one_of(redeem, cancel, resend), min_size=1, max_size=18))
def test_random_sequences_keep_the_invariants(client, services, steps):
    auth = _reset(services)
    first_outcome: dict[str, tuple[dict, int, dict]] = {}  # idempotency key -> (body, status, response)
    created: list[str] = []
    for step in steps:
        if step[0] == "redeem":
            _, key_index, kind, phone = step
            offer, tariff, points = OFFERS[kind]
            key = f"k{key_index}"
            body = {
                "program": "mobile-bonus",
                "tariff": tariff,
                "offer": offer,
                "points": points,
                "msisdn": PHONES[phone],
                "external_id": f"ext-{key_index}-{kind}-{phone}",
            }
            response = client.post("/v1/redemptions", json=body, headers={**auth, "Idempotency-Key": key})
            assert response.status_code < 500, response.text
            if key not in first_outcome:
                first_outcome[key] = (body, response.status_code, response.json())
                if response.status_code == 201:
                    created.append(response.json()["id"])
            elif first_outcome[key][0] == body:  # invariant 2: one key, one effect, same answer
                assert (response.status_code, response.json()) == first_outcome[key][1:]
            else:
                assert response.status_code == 422 and response.json()["code"] == "idempotency_conflict"
        elif created:
            rid = created[step[1] % len(created)]
            response = client.post(f"/v1/redemptions/{rid}/{step[0]}", headers=auth)
            assert response.status_code in (200, 202, 409), response.text

    with new_session() as s:
        redemptions = s.execute(
            text("SELECT id, status, code_id, card_id, nominal_minor FROM redemptions")
        ).all()
        records = s.execute(
            text("SELECT redemption_id, type, quantity, face_value_minor FROM reconciliation_records")
        ).all()
        codes = dict(s.execute(text("SELECT id, status FROM codes")).all())
        outbox = s.execute(
            text("SELECT count(*) FROM outbox WHERE actor = 'deliver_reward_sms'")
        ).scalar_one()
        resends = s.execute(text("SELECT coalesce(sum(resend_count), 0) FROM redemptions")).scalar_one()
    # invariant 2: every redemption came from exactly one key's first request
    assert len(redemptions) == sum(1 for _, status, _ in first_outcome.values() if status == 201)
    # invariant 1: a code belongs to at most one live redemption, and its status says so
    live_codes = [r.code_id for r in redemptions if r.code_id and r.status != "cancelled"]
    assert len(live_codes) == len(set(live_codes))
    assert {c for c, st_ in codes.items() if st_ == "reserved"} == set(live_codes)
    assert all(st_ == "available" for c, st_ in codes.items() if c not in live_codes)
    # invariant 4: one issue record each, a reversal for each cancellation, sums that agree
    for r in redemptions:
        mine = [rec for rec in records if rec.redemption_id == r.id]
        assert [rec.type for rec in mine].count("issue") == 1
        assert [rec.type for rec in mine].count("cancel") == (1 if r.status == "cancelled" else 0)
        assert sum(rec.face_value_minor for rec in mine) == (
            0 if r.status == "cancelled" else r.nominal_minor
        )
    assert len(records) == len(redemptions) + sum(1 for r in redemptions if r.status == "cancelled")
    assert outbox == len(redemptions) + resends
