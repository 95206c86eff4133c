"""A worker killed with SIGKILL in the middle of 2,000 deliveries: after a restart every redemption
ends sent/delivered and the SMSC saw each message (and each part) exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from service.kit.db.engine import new_session, transaction
from service.redemptions.schemas import RedemptionIn
from service.redemptions.service import Scope, redeem
from tests.conftest import import_codes_for
from tests.harness.delivery import Worker, statuses, wait_until
from tests.test_delivery import delivery, receiver, smsc  # noqa: F401  (fixtures)

TOTAL = 2000


def _progress() -> int:
    counts = statuses()
    return counts.get("sent", 0) + counts.get("delivered", 0)


def test_sigkill_mid_batch_loses_nothing_and_sends_nothing_twice(delivery, smsc):  # noqa: F811
    delivery.worker.stop()  # start from a full queue, with no worker yet
    import_codes_for("ARAY-CINEMA-2000", TOTAL)
    now = datetime.now(UTC)
    with transaction() as session:
        for i in range(TOTAL):
            redeem(
                session,
                RedemptionIn(
                    program="mobile-bonus",
                    tariff="basic",
                    offer="cinema-2000",
                    points=2000,
                    msisdn=f"8707{i:07d}",
                    external_id=f"crash-{i}",
                ),
                scope=Scope(None),
                api_key_id=None,
                now=now,
            )
    first = Worker(delivery.worker_env).start()
    wait_until(lambda: _progress() >= 300, 120, what="300 sent before the kill")
    first.kill()
    killed_at = _progress()
    with new_session() as s:
        cut = s.execute(text("SELECT count(*) FROM sms_messages WHERE status = 'submitting'")).scalar_one()
    assert killed_at < TOTAL, "the batch finished before the kill"
    second = Worker(delivery.worker_env).start()
    try:
        wait_until(lambda: _progress() == TOTAL, 240, every=0.5, what="every redemption sent or delivered")
    finally:
        second.stop()
    counts = smsc.count_by_text()
    assert len(counts) == TOTAL and set(counts.values()) == {1}
    with new_session() as s:
        parts = s.execute(text("SELECT sum(segments) FROM sms_messages")).scalar_one()
        # the redemptions that hold a complete SMS at the SMSC are exactly the sent/delivered ones
        assert {m.to for m in smsc.received} == set(
            s.execute(text("SELECT msisdn FROM redemptions WHERE status IN ('sent', 'delivered')")).scalars()
        )
        in_doubt = s.execute(
            text("SELECT count(*) FROM sms_messages WHERE status = 'submitting'")
        ).scalar_one()
    # Beyond the parts of the 2,000 complete messages, the SMSC may have taken a few fragments of
    # messages the kill cut between their parts (each then sent whole, exactly once, as asserted above).
    # Fragments cannot be counted exactly here: a resend reusing the cut message's UDH reference
    # overwrites the fragment in the simulator's reassembly table. They are bounded by what was in flight.
    fragments = smsc.submits - parts
    assert 0 <= fragments <= 16
    assert in_doubt == 0
    print(
        f"killed after {killed_at} of {TOTAL} with {cut} attempts in doubt;"
        f" SMSC received {len(counts)} messages, {smsc.submits} parts"
        f" ({fragments} orphan fragments)"
    )


def test_an_in_doubt_long_sms_is_settled_only_by_receipts_for_all_its_parts(client, keys):
    """A worker killed between the parts of a long SMS leaves only part 1 at the SMSC: one receipt
    must not make it 'sent' (the subscriber has no whole code); receipts for every part do."""
    from datetime import timedelta

    from service.delivery.service import apply_receipt

    made = client.post(
        "/v1/redemptions",
        json={
            "program": "mobile-bonus",
            "tariff": "basic",
            "offer": "gift-card-5000",
            "points": 5000,
            "msisdn": "87012223300",
            "external_id": "long-1",
        },
        headers={**keys.header("loyalty"), "Idempotency-Key": "long-1"},
    ).json()
    with transaction() as s:
        s.execute(
            text(
                "INSERT INTO sms_messages (redemption_id, send, msisdn, status, segments, deadline_at,"
                " submit_started_at) VALUES (:r, 0, '+77012223300', 'submitting', 2,"
                " now() + interval '1 day',"
                " now() - interval '1 minute')"
            ),
            {"r": made["id"]},
        )
    assert apply_receipt("smpp", "P1", "DELIVRD", "77012223300", now=datetime.now(UTC) + timedelta(seconds=1))
    with new_session() as s:
        assert s.execute(text("SELECT status FROM sms_messages")).scalar_one() == "submitting"
        assert s.execute(text("SELECT status FROM redemptions")).scalar_one() == "accepted"
    apply_receipt("smpp", "P2", "DELIVRD", "77012223300", now=datetime.now(UTC) + timedelta(seconds=1))
    with new_session() as s:
        row = s.execute(text("SELECT status, provider_message_ids FROM sms_messages")).one()
        assert row.status == "delivered" and sorted(row.provider_message_ids) == ["P1", "P2"]
        assert s.execute(text("SELECT status FROM redemptions")).scalar_one() == "delivered"
