"""Reward SMS travel in batches: the relay packs waiting sends into one job, a worker claims the batch
in one transaction, submits it through one SMPP window and records every outcome together; receipts
are applied in batches. Each send in a batch keeps its own fate."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC

import pytest
from sqlalchemy import text

from service.delivery.providers import (
    InDoubtSmsError,
    OutgoingSms,
    Receipt,
    SmppProvider,
    SmppSession,
    TransientSmsError,
)
from service.delivery.service import Job, ReceiptTooEarly, apply_receipts, apply_smpp_receipts, deliver_many
from service.delivery.smsc import TestSmsc
from service.kit.db.engine import new_session
from tests.conftest import import_codes_for, post_redemption
from tests.harness.delivery import WebhookReceiver, flush_queues, point_webhooks_at, wait_until


@pytest.fixture
def smsc():
    server = TestSmsc(receipt_delay=3600).start()  # receipts only when a test hands them in itself
    yield server
    server.stop()


@pytest.fixture
def smpp(smsc):
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    yield SmppProvider(session)
    session.close()


def _redeem(
    client, keys, count: int, webhook_url: str = "http://127.0.0.1:9/hooks", prefix: str = "8701555"
) -> list[Job]:
    point_webhooks_at(webhook_url)  # events are written; only a test that asks delivers them
    import_codes_for("ARAY-CINEMA-2000", count)
    jobs = []
    for i in range(count):
        made = post_redemption(client, keys, msisdn=f"{prefix}{i:04d}")
        assert made.status_code == 201, made.text
        jobs.append(Job(uuid.UUID(made.json()["id"]), 0))
    return jobs


def _sms_status() -> dict[str, str]:
    with new_session() as s:
        return {str(r): st for r, st in s.execute(text("SELECT redemption_id, status FROM sms_messages"))}


def _events() -> Counter:
    with new_session() as s:
        return Counter(s.execute(text("SELECT type FROM webhook_events")).scalars())


def test_a_batch_sends_each_sms_once_and_fails_only_the_refused_one(client, keys, smsc, smpp):
    jobs = _redeem(client, keys, 6)
    smsc.invalid_destinations.add("77015550002")
    outcomes = deliver_many(jobs, provider=smpp)
    assert Counter(o.result for o in outcomes.values()) == {"sent": 5, "failed": 1}
    assert outcomes[jobs[2]].result == "failed"
    assert sorted(m.to for m in smsc.received) == [f"+7701555000{i}" for i in (0, 1, 3, 4, 5)]
    with new_session() as s:
        reason = s.execute(
            text("SELECT status_reason FROM redemptions WHERE id = :id"), {"id": jobs[2].redemption_id}
        ).scalar_one()
        issued = s.execute(text("SELECT count(*) FROM codes WHERE status = 'issued'")).scalar_one()
    assert "0x0B" in reason and issued == 5
    assert _events() == {"redemption.sent": 5, "redemption.failed": 1}


def test_a_batch_run_twice_sends_nothing_the_second_time(client, keys, smsc, smpp):
    jobs = _redeem(client, keys, 4)
    deliver_many(jobs, provider=smpp)
    submits = smsc.submits
    again = deliver_many(jobs, provider=smpp)
    assert {o.result for o in again.values()} == {"nothing to do"}
    assert smsc.submits == submits and len(smsc.received) == 4
    assert _events() == {"redemption.sent": 4}


@pytest.mark.parametrize("status", [0x58, 0x14], ids=["ESME_RTHROTTLED", "ESME_RMSGQFUL"])
def test_a_throttled_batch_goes_back_to_pending_and_is_handed_on_for_retry(client, keys, smsc, smpp, status):
    jobs = _redeem(client, keys, 3)
    smsc.throttle(60, status=status)
    outcomes = deliver_many(jobs, provider=smpp)
    # "retry" after the throttled class's first delay (1 s, with a fifth of jitter either way)
    assert {o.result for o in outcomes.values()} == {"retry"}
    assert all(800 <= o.retry_ms <= 1200 for o in outcomes.values())
    assert set(_sms_status().values()) == {"pending"} and smsc.received == []
    smsc.throttle(0)
    assert {o.result for o in deliver_many(jobs, provider=smpp).values()} == {"sent"}
    assert len(smsc.received) == 3


def test_a_send_the_smpp_session_never_took_is_not_in_doubt_and_never_goes_out(smsc):
    session = SmppSession(
        smsc.host, smsc.port, "rewards", "", on_receipts=lambda r: [None] * len(r), window=1
    )
    try:
        session.submit(OutgoingSms("warm", "+77015559999", "Test", "hello", "GSM-7", 1))  # bound
        messages = [OutgoingSms(f"r{i}", f"+7701556{i:04d}", "Test", "hello", "GSM-7", 1) for i in range(30)]
        results = session.submit_many(messages, timeout=0.0)
        never_taken = {
            m.to for m, r in zip(messages, results, strict=True) if isinstance(r, TransientSmsError)
        }
        assert len(never_taken) >= 20
        assert all(isinstance(r, (list, TransientSmsError, InDoubtSmsError)) for r in results)
        time.sleep(1.0)  # anything the session thread still held has gone out by now
        assert never_taken.isdisjoint(m.to for m in smsc.received)
    finally:
        session.close()


def test_receipts_of_a_batch_settle_their_messages_and_an_unknown_one_is_asked_for_again(
    client, keys, smsc, smpp
):
    jobs = _redeem(client, keys, 3)
    deliver_many(jobs, provider=smpp)
    first, second, _ = sorted(smsc.received, key=lambda m: m.to)
    # every part of the first delivered, one part of the second undeliverable, and one nobody knows
    receipts = [Receipt(i, "DELIVRD", first.to[1:]) for i in first.message_ids]
    receipts += [
        Receipt(second.message_ids[0], "UNDELIV", second.to[1:]),
        Receipt("FFFFFFFF", "DELIVRD", "77019999999"),
    ]
    errors = apply_receipts("smpp", receipts)
    assert errors[:-1] == [None] * (len(receipts) - 1) and isinstance(errors[-1], ReceiptTooEarly)
    assert sorted(_sms_status().values()) == ["delivered", "failed", "sent"]
    assert _events() == {"redemption.sent": 3, "redemption.delivered": 1, "redemption.failed": 1}


def test_the_relay_packs_waiting_sends_into_jobs_of_the_batch_size(client, keys, monkeypatch):
    import dramatiq

    from service.kit.config import get_settings
    from service.kit.messaging.jobs import SMS_QUEUE
    from workers.broker import broker
    from workers.relay import publish_batch

    flush_queues()
    jobs = _redeem(client, keys, 10)
    monkeypatch.setattr(get_settings(), "sms_batch_size", 4)
    assert publish_batch(broker) == 10
    client_ = broker.client
    queued = [
        dramatiq.Message.decode(client_.hget(f"dramatiq:{SMS_QUEUE}.msgs", message_id))
        for message_id in client_.lrange(f"dramatiq:{SMS_QUEUE}", 0, -1)
    ]
    assert {m.actor_name for m in queued} == {"deliver_reward_sms_batch"}
    assert sorted(len(m.kwargs["jobs"]) for m in queued) == [2, 4, 4]
    packed = [(uuid.UUID(r), s) for m in queued for r, s in m.kwargs["jobs"]]
    assert sorted(packed) == sorted((j.redemption_id, j.send) for j in jobs)
    assert publish_batch(broker) == 0  # published once
    flush_queues()


def test_with_a_batch_size_of_one_the_relay_publishes_each_send_to_the_single_send_actor(
    client, keys, monkeypatch
):
    import dramatiq

    from service.kit.config import get_settings
    from service.kit.messaging.jobs import SMS_QUEUE
    from workers.broker import broker
    from workers.relay import publish_batch

    flush_queues()
    jobs = _redeem(client, keys, 3)
    monkeypatch.setattr(get_settings(), "sms_batch_size", 1)
    assert publish_batch(broker) == 3
    queued = [
        dramatiq.Message.decode(broker.client.hget(f"dramatiq:{SMS_QUEUE}.msgs", message_id))
        for message_id in broker.client.lrange(f"dramatiq:{SMS_QUEUE}", 0, -1)
    ]
    assert {m.actor_name for m in queued} == {"deliver_reward_sms"}
    assert sorted(uuid.UUID(m.kwargs["redemption_id"]) for m in queued) == sorted(
        j.redemption_id for j in jobs
    )
    flush_queues()


def test_the_provider_rate_limit_holds_across_concurrent_takers(services):
    from workers.actors import take_provider_slots

    provider, limit, per_taker = f"test-{uuid.uuid4().hex[:8]}", 10, 8
    grants: list[tuple[int, int]] = []
    lock = threading.Lock()

    def taker() -> None:
        got = 0
        while got < per_taker:
            granted, wait_us, second = take_provider_slots(provider, limit, min(3, per_taker - got))
            if granted:
                got += granted
                with lock:
                    grants.append((second, granted))
            else:
                time.sleep(wait_us / 1e6)

    threads = [threading.Thread(target=taker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    by_second = Counter()
    for second, granted in grants:
        by_second[second] += granted
    assert sum(by_second.values()) == 4 * per_taker
    assert max(by_second.values()) <= limit and len(by_second) >= 4


def test_a_webhook_pack_delivers_each_event_and_hands_back_only_the_refused_one(client, keys, smpp):
    from service.events.webhooks import deliver_events

    receiver = WebhookReceiver(failures_left=1).start()
    try:
        deliver_many(_redeem(client, keys, 3, webhook_url=receiver.url), provider=smpp)
        with new_session() as s:
            event_ids = list(s.execute(text("SELECT id FROM webhook_events")).scalars())
        results = deliver_events(event_ids)
        assert sorted(r.split(":")[0] for r in results.values()) == ["delivered", "delivered", "retry"]
        assert len(receiver.events) == 2  # the refused request is not recorded by the receiver
        with new_session() as s:
            attempts = s.execute(text("SELECT count(*) FROM webhook_attempts")).scalar_one()
            delivered = s.execute(
                text("SELECT count(*) FROM webhook_events WHERE delivered_at IS NOT NULL")
            ).scalar_one()
        assert (attempts, delivered) == (3, 2)
        assert set(deliver_events(event_ids).values()) == {"done", "delivered"}  # only the refused one again
        assert len(receiver.events) == 3
    finally:
        receiver.stop()


def test_receipts_for_many_in_doubt_attempts_settle_them_together_part_by_part(client, keys):
    """After a crash, receipts of attempts whose outcome was never recorded arrive in a burst: they
    are placed by destination, and an attempt is settled once every one of its parts has a receipt."""
    from datetime import datetime, timedelta

    from service.delivery.service import claim

    jobs = _redeem(client, keys, 3)
    started = datetime.now(UTC)
    claimed, _ = claim(jobs, started)  # `submitting`, then the worker "died"
    later = started + timedelta(seconds=30)
    first, second, third = claimed
    receipts = [
        Receipt(f"P{i}-{n}", "DELIVRD", c.sms.to[1:])
        for i, c in enumerate((first, second))
        for n in range(c.sms.segments)
    ]
    receipts.append(Receipt("P2-0", "DELIVRD", third.sms.to[1:]))  # one part of the third only
    assert apply_receipts("smpp", receipts, now=later) == [None] * len(receipts)
    status = _sms_status()
    assert [status[str(c.job.redemption_id)] for c in claimed] == ["delivered", "delivered", "submitting"]
    assert third.sms.segments > 1  # so one receipt was not enough
    assert _events() == {"redemption.sent": 2, "redemption.delivered": 2}


def test_a_receipt_for_an_attempt_still_being_recorded_is_asked_for_again(client, keys):
    from datetime import datetime

    from service.delivery.service import claim

    (job,) = _redeem(client, keys, 1)
    (claimed,), _ = claim([job], datetime.now(UTC))
    errors = apply_receipts("smpp", [Receipt("P0", "DELIVRD", claimed.sms.to[1:])])
    assert isinstance(errors[0], ReceiptTooEarly)
    assert _sms_status() == {str(job.redemption_id): "submitting"}


def test_rows_the_broker_refused_stay_waiting_and_go_out_on_the_next_pass(client, keys):
    import redis
    from dramatiq.brokers.redis import RedisBroker

    from service.kit.messaging.jobs import SMS_QUEUE
    from workers.broker import broker
    from workers.relay import publish_batch

    flush_queues()
    _redeem(client, keys, 3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = s.getsockname()[1]
    unreachable = RedisBroker(url=f"redis://127.0.0.1:{nowhere}/0")
    unreachable.declare_queue(SMS_QUEUE)
    with pytest.raises(redis.ConnectionError):
        publish_batch(unreachable)
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one() == 3
    assert publish_batch(broker) == 3
    flush_queues()


def test_a_receipt_for_an_id_the_smsc_gave_out_again_settles_the_newest_message_with_it(
    client, keys, smsc, smpp
):
    import_codes_for("ARAY-CINEMA-2000", 4)
    old = _redeem(client, keys, 2)
    deliver_many(old, provider=smpp)
    smsc.restart_numbering()
    new = _redeem(client, keys, 2, prefix="8701666")
    deliver_many(new, provider=smpp)
    reused = [m for m in smsc.received if m.to.startswith("+7701666")]
    assert set(reused[0].message_ids) & {
        i for m in smsc.received[:2] for i in m.message_ids
    }  # ids were reused
    receipts = [Receipt(i, "DELIVRD", m.to[1:]) for m in reused for i in m.message_ids]
    assert apply_receipts("smpp", receipts) == [None] * len(receipts)
    status = _sms_status()
    assert [status[str(j.redemption_id)] for j in old + new] == ["sent", "sent", "delivered", "delivered"]


def test_receipts_are_looked_up_through_an_index_however_many_parts_were_ever_sent(client, keys, smsc, smpp):
    """The receipt lookup must cost what the batch costs, not what the history costs: with 50,000
    parts on record and 200 receipts in the batch, the planner still goes through the index."""
    from service.delivery.service import RECEIPTED_MESSAGES

    deliver_many(_redeem(client, keys, 1), provider=smpp)
    with new_session() as s:
        s.execute(
            text(
                "INSERT INTO sms_provider_messages (provider, provider_message_id, sms_message_id)"
                " SELECT 'smpp', 'H' || n, (SELECT id FROM sms_messages) FROM generate_series(1, 50000) AS n"
            )
        )
        s.execute(text("ANALYZE sms_provider_messages"))
        s.commit()
        db = s.connection().connection.driver_connection
        plan = db.execute(
            "EXPLAIN (FORMAT JSON) " + RECEIPTED_MESSAGES,
            {"provider": "smpp", "ids": [f"H{n}" for n in range(1, 40000, 200)]},
        ).fetchone()[0]

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    lookups = [n for n in nodes(plan[0]["Plan"]) if n.get("Relation Name") == "sms_provider_messages"]
    assert lookups and all(n["Node Type"].startswith("Index") for n in lookups), lookups
    assert all(n["Plan Rows"] < 1000 for n in lookups)


def test_an_sms_no_provider_took_by_its_programs_deadline_fails_the_redemption_with_the_reason(
    client, keys, smsc, smpp
):
    """Business Club gives its SMS 4 hours (its catalog entry), Mobile Bonus the default 24."""
    from datetime import datetime, timedelta

    point_webhooks_at("http://127.0.0.1:9/hooks")
    import_codes_for("ARAY-CINEMA-2000", 1)
    business = post_redemption(
        client,
        keys,
        role="admin",
        program="business",
        tariff="biz-start",
        offer="gift-card-20000",
        points=20000,
        msisdn="87015550101",
    )
    assert business.status_code == 201, business.text
    mobile = post_redemption(client, keys, msisdn="87015550102")
    jobs = [Job(uuid.UUID(business.json()["id"]), 0), Job(uuid.UUID(mobile.json()["id"]), 0)]
    smsc.throttle(3600)
    start = datetime.now(UTC)
    assert {o.result for o in deliver_many(jobs, provider=smpp, now=start).values()} == {"retry"}
    later = deliver_many(jobs, provider=smpp, now=start + timedelta(hours=5))
    assert (later[jobs[0]].result, later[jobs[1]].result) == ("failed", "retry")
    with new_session() as s:
        status, reason = s.execute(
            text("SELECT status, status_reason FROM redemptions WHERE id = :id"),
            {"id": jobs[0].redemption_id},
        ).one()
    assert status == "failed" and reason.startswith("undelivered by the deadline") and "0x58" in reason
    assert _events() == {"redemption.failed": 1}
    assert smsc.received == []


def test_an_idle_session_sends_enquire_link_and_answers_the_smscs(smsc):
    session = SmppSession(
        smsc.host, smsc.port, "rewards", "", on_receipts=lambda r: [None] * len(r), enquire_every=0.2
    )
    try:
        session.submit(OutgoingSms("warm", "+77015559999", "Test", "hello", "GSM-7", 1))  # bound
        wait_until(lambda: smsc.enquire_links >= 2, 10, what="our enquire_link while idle")
        smsc.enquire_link()
        wait_until(lambda: smsc.enquire_link_resps == 1, 10, what="our answer to the SMSC's enquire_link")
        assert smsc.bound_sessions == 1  # the same session throughout: no reconnect
    finally:
        session.close()


def test_an_expired_receipt_without_the_tlv_fails_the_redemption_with_a_webhook(client, keys):
    """Some SMSCs leave out receipted_message_id: the id is read from the receipt text."""
    expiring = TestSmsc(receipt_delay=0.2, receipt_state="EXPIRED", receipt_tlv=False).start()
    session = SmppSession(expiring.host, expiring.port, "rewards", "", on_receipts=apply_smpp_receipts)
    try:
        (job,) = _redeem(client, keys, 1)
        assert deliver_many([job], provider=SmppProvider(session))[job].result == "sent"
        wait_until(
            lambda: _sms_status() == {str(job.redemption_id): "failed"}, 20, what="the EXPIRED receipt"
        )
    finally:
        session.close()
        expiring.stop()
    with new_session() as s:
        status, reason = s.execute(text("SELECT status, status_reason FROM redemptions")).one()
    assert (status, reason) == ("failed", "undeliverable: EXPIRED")
    assert _events() == {"redemption.sent": 1, "redemption.failed": 1}


def test_while_receipts_cannot_be_applied_each_failed_batch_is_one_log_line_and_comes_again():
    import io
    import json

    from service.kit.observability.logging import configure_logging

    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    smsc = TestSmsc(receipt_delay=0.0).start()

    batches: list[int] = []

    def database_away(receipts):
        batches.append(len(receipts))
        raise OSError("database away")

    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=database_away)
    try:
        messages = [OutgoingSms(f"r{i}", f"+7701557{i:04d}", "Test", "hello", "GSM-7", 1) for i in range(20)]
        assert all(isinstance(r, list) for r in session.submit_many(messages))
        time.sleep(2.0)  # the SMSC offers the refused receipts again every 0.5 s
    finally:
        smsc.stop()
        time.sleep(0.5)  # the receipts already read are refused and logged by now
        session.close()
        configure_logging("INFO", json=True)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert sum(batches) >= 2 * 20  # every receipt refused, and offered again
    assert [line["receipts"] for line in lines if line["event"] == "receipts_failed"] == batches
    assert not any(line["event"] == "receipt_failed" for line in lines)  # no line per receipt
    assert smsc.receipts_acked == 0
