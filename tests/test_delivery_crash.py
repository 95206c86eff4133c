"""A worker killed with SIGKILL in the middle of 2,000 deliveries: after a restart every redemption
ends sent/delivered and the SMSC saw each message (and each part) exactly once."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import text

from service.db import new_session, transaction
from service.redemptions.schemas import RedemptionIn
from service.redemptions.service import Scope, redeem
from tests.conftest import import_codes_for
from tests.delivery_harness import Worker, statuses, wait_until
from tests.test_delivery import delivery, receiver, smsc  # noqa: F401  (fixtures)

TOTAL = 2000


def _progress() -> int:
    counts = statuses()
    return counts.get("sent", 0) + counts.get("delivered", 0)


def test_sigkill_mid_batch_loses_nothing_and_sends_nothing_twice(delivery, smsc):  # noqa: F811
    delivery.worker.stop()  # start from a full queue, with no worker yet
    import_codes_for("ARAY-CINEMA-2000", TOTAL)
    now = datetime.now(timezone.utc)
    with transaction() as session:
        for i in range(TOTAL):
            redeem(session, RedemptionIn(program="mobile-bonus", tariff="basic", offer="cinema-2000", points=2000,
                                         msisdn=f"8707{i:07d}", external_id=f"crash-{i}"),
                   scope=Scope(None), api_key_id=None, now=now)
    first = Worker(delivery.worker_env).start()
    wait_until(lambda: _progress() >= 300, 120, what="300 sent before the kill")
    first.kill()
    killed_at = _progress()
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
        in_doubt = s.execute(text("SELECT count(*) FROM sms_messages WHERE status = 'submitting'")).scalar_one()
    assert smsc.submits == parts, "a part was submitted twice"
    assert in_doubt == 0
    print(f"killed after {killed_at} of {TOTAL}; SMSC received {len(counts)} messages, {smsc.submits} parts")
