"""SMS delivery end to end: API -> outbox -> relay -> Redis -> Dramatiq worker -> SMPP -> test SMSC
-> receipt -> delivered, with webhooks; each party real, on loopback."""

from __future__ import annotations

import hashlib
import hmac
import math
import os

import pytest
from sqlalchemy import text

from service.delivery.smsc import TestSmsc
from service.delivery.text import encoding_for, segment_count
from service.kit.db.engine import new_session, transaction
from service.kit.security.crypto import get_vault
from tests.conftest import import_codes_for, post_redemption
from tests.harness.delivery import (
    WebhookReceiver,
    Worker,
    flush_queues,
    point_webhooks_at,
    statuses,
    wait_until,
)


@pytest.fixture
def smsc():
    server = TestSmsc().start()
    yield server
    server.stop()


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def delivery(services, keys, smsc, receiver):
    """Relay in this process, one worker process bound to the test SMSC; yields the keys."""
    from workers.broker import broker
    from workers.relay import Relay

    flush_queues()
    point_webhooks_at(receiver.url)
    env = {
        **os.environ,
        "SMS_PROVIDER": "smpp",
        "SMPP_HOST": smsc.host,
        "SMPP_PORT": str(smsc.port),
        "SMPP_SYSTEM_ID": "rewards",
        "SMPP_PASSWORD": "secret",
        "SMS_IN_DOUBT_SECONDS": "10",
        "DRAMATIQ_HEARTBEAT_TIMEOUT_MS": "5000",
        "DRAMATIQ_MAINTENANCE_CHANCE": "200000",
        "LOG_LEVEL": os.environ.get("WORKER_LOG_LEVEL", "WARNING"),
    }
    relay = Relay(broker, stale_seconds=15).start()
    worker = Worker(env).start()
    wait_until(lambda: smsc.bound_sessions > 0, 30, what="the worker to bind to the SMSC")
    keys.worker_env = env
    keys.worker = worker
    yield keys
    worker.stop()
    relay.stop()


def _code_of(redemption_id: str) -> str:
    with new_session() as s:
        blob = s.execute(
            text("SELECT c.code_enc FROM codes c JOIN redemptions r ON r.code_id = c.id WHERE r.id = :id"),
            {"id": redemption_id},
        ).scalar_one()
    return get_vault().decrypt(bytes(blob), b"code")


def test_a_reward_sms_reaches_the_smsc_and_its_receipt_makes_it_delivered(client, delivery, smsc, receiver):
    import_codes_for("ARAY-CINEMA-2000", 2)
    made = post_redemption(client, delivery, msisdn="87011112233").json()
    wait_until(lambda: statuses().get("delivered") == 1, 30, what="delivered")
    (sms,) = smsc.received
    assert sms.to == "+77011112233" and sms.sender == "QazaqBonus"
    assert _code_of(made["id"]) in sms.text and "Mobile Bonus" in sms.text
    with new_session() as s:
        row = s.execute(
            text(
                "SELECT status, provider, provider_message_ids, segments, encoding, attempts"
                " FROM sms_messages"
            )
        ).one()
        code_status = s.execute(
            text("SELECT c.status FROM codes c JOIN redemptions r ON r.code_id = c.id")
        ).scalar_one()
    assert (
        row.status == "delivered" and row.provider == "smpp" and row.provider_message_ids == sms.message_ids
    )
    assert (row.encoding, row.segments, row.attempts) == ("UCS-2", sms.segments, 1)
    assert code_status == "issued"
    # webhooks go out concurrently: consumers order them by created_at, not by arrival
    wait_until(
        lambda: sorted(receiver.types_for(made["id"])) == ["redemption.delivered", "redemption.sent"],
        20,
        what="webhooks",
    )


def test_webhooks_are_signed_over_timestamp_and_body(client, delivery, receiver):
    from service.events.webhooks import program_secret

    import_codes_for("ARAY-CINEMA-2000", 1)
    made = post_redemption(client, delivery).json()
    wait_until(lambda: len(receiver.types_for(made["id"])) == 2, 30, what="webhooks")
    # The redemption's own events: the pool's stock.low (its last code went) may arrive first, and it
    # may go out under another program of the pool, signed by that program's secret.
    (event, _) = [e for e in receiver.events if e["json"]["data"].get("redemption_id") == made["id"]]
    headers = {k.lower(): v for k, v in event["headers"].items()}
    expected = hmac.new(
        program_secret("mobile-bonus"),
        f"{headers['rewards-timestamp']}.".encode() + event["body"],
        hashlib.sha256,
    ).hexdigest()
    assert headers["rewards-signature"] == f"v1={expected}"
    assert headers["rewards-event-id"] == event["json"]["id"]


def test_kazakh_text_goes_out_as_ucs2_concatenated_with_the_right_segment_count(client, delivery, smsc):
    made = post_redemption(client, delivery, offer="gift-card-5000", points=5000, locale="kk").json()
    wait_until(lambda: statuses().get("delivered") == 1, 30, what="delivered")
    (sms,) = smsc.received
    assert "сыйлық картасы" in sms.text and "ПИН" in sms.text
    assert encoding_for(sms.text) == sms.encoding == "UCS-2"
    expected = 1 if len(sms.text) <= 70 else math.ceil(len(sms.text) / 67)
    assert sms.segments == segment_count(sms.text) == expected >= 2
    assert sms.udh_reference is not None and len(sms.message_ids) == expected
    with new_session() as s:
        assert s.execute(text("SELECT segments FROM sms_messages")).scalar_one() == expected
    assert made["reward"]["last4"] in sms.text


def test_a_permanent_error_is_not_retried_and_ends_failed_with_a_webhook(client, delivery, smsc, receiver):
    import_codes_for("ARAY-CINEMA-2000", 1)
    smsc.invalid_destinations.add("77014440000")
    made = post_redemption(client, delivery, msisdn="87014440000").json()
    wait_until(lambda: statuses().get("failed") == 1, 30, what="failed")
    wait_until(lambda: receiver.types_for(made["id"]) == ["redemption.failed"], 20, what="failed webhook")
    with new_session() as s:
        reason = s.execute(text("SELECT status_reason FROM redemptions")).scalar_one()
        attempts, segments = s.execute(text("SELECT attempts, segments FROM sms_messages")).one()
    # one attempt: its parts were submitted once each, and nothing after the refusal
    assert "0x0B" in reason and attempts == 1 and smsc.submits == segments and smsc.received == []


def test_a_cancelled_redemption_sends_a_cancelled_webhook_and_no_sms(client, delivery, smsc, receiver):
    made = post_redemption(client, delivery, offer="gift-card-5000", points=5000).json()
    client.post(f"/v1/redemptions/{made['id']}/cancel", headers=delivery.header("loyalty"))
    wait_until(lambda: "redemption.cancelled" in receiver.types_for(made["id"]), 20, what="cancel webhook")


def test_throttling_and_dropped_connections_delay_sms_but_never_duplicate_them(client, delivery, smsc):
    import_codes_for("ARAY-CINEMA-2000", 40)
    smsc.throttle(3.0)
    for i in range(20):
        assert post_redemption(client, delivery, msisdn=f"870166{i:05d}").status_code == 201
    wait_until(lambda: smsc.throttled > 0, 10, what="throttling")
    for i in range(20, 40):
        assert post_redemption(client, delivery, msisdn=f"870166{i:05d}").status_code == 201
        if i == 25:
            smsc.drop_connections(2.0)
    try:
        wait_until(lambda: statuses().get("delivered") == 40, 90, what="all delivered")
    except AssertionError:
        with new_session() as s:
            print(
                s.execute(
                    text(
                        "SELECT msisdn, status, attempts, provider_message_ids, receipts, submit_started_at,"
                        " sent_at FROM sms_messages WHERE status <> 'delivered'"
                    )
                ).all()
            )
            print(
                s.execute(text("SELECT count(*), count(published_at) FROM outbox")).all(),
                statuses(),
                smsc.throttled,
                smsc.submits,
            )
        raise
    counts = smsc.count_by_text()
    assert len(counts) == 40 and set(counts.values()) == {1}
    assert smsc.throttled > 0


def test_a_webhook_receiver_that_fails_gets_the_event_again_later(client, delivery, receiver):
    receiver.failures_left, receiver.failing_type = 1, "redemption.cancelled"  # not the relay's stock.low
    with transaction() as s:  # one event only: no SMS receipt, so no "delivered" event races the "sent" one
        s.execute(text("UPDATE programs SET webhook_url = NULL WHERE code <> 'mobile-bonus'"))
    made = post_redemption(client, delivery, offer="gift-card-5000", points=5000).json()
    client.post(f"/v1/redemptions/{made['id']}/cancel", headers=delivery.header("loyalty"))
    wait_until(lambda: "redemption.cancelled" in receiver.types_for(made["id"]), 40, what="retried webhook")

    def attempts() -> list[int]:  # the worker records an attempt just after the receiver answers it
        with new_session() as s:
            return (
                s.execute(
                    text(
                        "SELECT a.status_code FROM webhook_attempts a JOIN webhook_events e"
                        " ON e.id = a.event_id WHERE e.type = 'redemption.cancelled' ORDER BY a.id"
                    )
                )
                .scalars()
                .all()
            )

    wait_until(lambda: len(attempts()) == 2, 10, what="the second attempt recorded")
    assert attempts() == [503, 204]
