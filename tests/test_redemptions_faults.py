"""A redemption (or cancellation) cut at any step leaves nothing half-written, and the same request
succeeds when retried with the same Idempotency-Key. A crash of our own code is a 500; a connection
to the database lost mid-request is the database being away: 503 with Retry-After."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from service.kit.db.engine import libpq_url, new_session
from service.kit.reliability import faults
from tests.conftest import assert_problem, import_codes_for, redemption_body

# The redemption is one statement, then the idempotency row and the commit go in one round trip:
# these are the moments a crash can fall between.
REDEEM_STEPS = ["redeem.after_statement", "idempotency.before_store", "idempotency.before_commit"]


def _state() -> dict:
    with new_session() as s:
        one = lambda sql: s.execute(text(sql)).one()._tuple()  # noqa: E731
        return {
            "rows": one(
                "SELECT (SELECT count(*) FROM redemptions), (SELECT count(*) FROM reconciliation_records),"
                " (SELECT count(*) FROM outbox), (SELECT count(*) FROM idempotency_keys),"
                " (SELECT count(*) FROM cards)"
            ),
            "codes": s.execute(text("SELECT id, status FROM codes ORDER BY id")).all(),
            "budget": s.execute(
                text("SELECT program_id, month, spent_minor FROM program_budget_usage")
            ).all(),
            "redemptions": s.execute(text("SELECT id, status FROM redemptions ORDER BY id")).all(),
        }


def assert_cut(response, fault: str) -> None:
    if fault == "raise":
        assert_problem(response, 500, "internal_error")
    else:
        assert_problem(response, 503, "service_unavailable")
        assert response.headers["Retry-After"].isdigit()


def _raise() -> None:
    raise RuntimeError("injected crash")


def _kill_backend(services) -> callable:
    def kill() -> None:
        # Terminate, from outside, the backend that holds the open transaction: a real lost connection.
        # In the middle of a pipeline (statements sent, no Sync yet) its state is still 'active'.
        with psycopg.connect(libpq_url(services.database_url), autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'rewards' AND backend_xid IS NOT NULL"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
        assert killed, "no transaction was open at the checkpoint"

    return kill


@pytest.fixture(autouse=True)
def _no_faults_left():
    yield
    faults.clear()


@pytest.fixture
def stocked(keys):
    import_codes_for("ARAY-CINEMA-2000", 3)
    return keys


@pytest.mark.parametrize("fault", ["raise", "kill"])
@pytest.mark.parametrize("step", REDEEM_STEPS)
@pytest.mark.parametrize("offer", ["cinema-2000", "gift-card-5000"])
def test_a_redemption_cut_at_any_step_leaves_nothing(client, stocked, services, step, fault, offer):
    body = redemption_body(offer=offer, points=2000 if offer == "cinema-2000" else 5000)
    headers = {**stocked.header("loyalty"), "Idempotency-Key": f"fault-{step}-{fault}"}
    before = _state()
    faults.inject(step, _raise if fault == "raise" else _kill_backend(services))
    response = client.post("/v1/redemptions", json=body, headers=headers)
    assert_cut(response, fault)
    assert _state() == before
    faults.clear()
    retried = client.post("/v1/redemptions", json=body, headers=headers)
    assert retried.status_code == 201, retried.text


@pytest.mark.parametrize("fault", ["raise", "kill"])
@pytest.mark.parametrize("step", ["cancel.after_release", "cancel.after_records"])
def test_a_cancellation_cut_at_any_step_leaves_the_redemption_as_it_was(
    client, stocked, services, step, fault
):
    made = client.post(
        "/v1/redemptions",
        json=redemption_body(),
        headers={**stocked.header("loyalty"), "Idempotency-Key": "to-cancel"},
    ).json()
    before = _state()
    faults.inject(step, _raise if fault == "raise" else _kill_backend(services))
    response = client.post(f"/v1/redemptions/{made['id']}/cancel", headers=stocked.header("loyalty"))
    assert_cut(response, fault)
    assert _state() == before
    faults.clear()
    assert (
        client.post(f"/v1/redemptions/{made['id']}/cancel", headers=stocked.header("loyalty")).status_code
        == 200
    )
