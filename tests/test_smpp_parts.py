"""A long SMS travels as several submit_sm, and an SMSC may refuse one part and take another. The
parts it took are kept (their ids, their receipts), only the missing parts go again, under the same
concatenation reference, and the SMS counts as sent once every part is taken: the handset never
gets an orphan fragment and the operator bills each part once. The rate limit counts submit_sm PDUs.
Each case is a fault mode of the test SMSC."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.delivery.providers import SmppProvider, SmppSession
from service.delivery.service import Job, apply_smpp_receipts, deliver_many
from service.delivery.smsc import GENERIC_NACK, TestSmsc
from service.kit.db.engine import new_session
from tests.conftest import import_codes_for, post_redemption
from tests.harness.delivery import point_webhooks_at, wait_until


@pytest.fixture
def smsc():
    server = TestSmsc(receipt_delay=0.2).start()
    yield server
    server.stop()


@pytest.fixture
def smpp(smsc):
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    yield SmppProvider(session)
    session.close()


def _long_sms(client, keys, msisdn: str = "87015550001") -> Job:
    """A gift card: its Russian text is UCS-2 and takes more than one part."""
    point_webhooks_at("http://127.0.0.1:9/hooks")
    made = post_redemption(client, keys, offer="gift-card-5000", points=5000, msisdn=msisdn)
    assert made.status_code == 201, made.text
    return Job(uuid.UUID(made.json()["id"]), 0)


def _message() -> dict:
    with new_session() as s:
        row = s.execute(
            text(
                "SELECT m.status, m.segments, m.provider_message_ids, r.status AS redemption,"
                " r.status_reason FROM sms_messages m JOIN redemptions r ON r.id = m.redemption_id"
            )
        ).one()
    return row._asdict()


def _parts(smsc: TestSmsc) -> list[tuple[int, str]]:
    return [(s.part, s.answer) for s in smsc.seen]


REFUSALS = [
    pytest.param(0x58, "0x58", id="ESME_RTHROTTLED"),
    pytest.param(0x14, "0x14", id="ESME_RMSGQFUL"),
    pytest.param(0x08, "0x08", id="ESME_RSYSERR"),
    pytest.param(GENERIC_NACK, "generic_nack", id="generic_nack"),
]


@pytest.mark.parametrize("status,answer", REFUSALS)
@pytest.mark.parametrize("refused_part", [1, 2])
def test_a_refused_part_alone_is_sent_again_under_the_same_reference(
    client, keys, smsc, smpp, status, answer, refused_part
):
    job = _long_sms(client, keys)
    smsc.refuse_part(refused_part, status)
    now = datetime.now(UTC)
    assert deliver_many([job], provider=smpp, now=now)[job].result == "retry"
    assert deliver_many([job], provider=smpp, now=now + timedelta(seconds=5))[job].result == "sent"
    (sms,) = smsc.received  # one whole message at the handset, no orphan fragment
    total = sms.segments
    assert total >= 2
    others = [(p, "ok") for p in range(1, total + 1) if p != refused_part]
    # every part taken once, the refused one tried twice; all under one UDH reference
    assert sorted(_parts(smsc)) == sorted([*others, (refused_part, answer), (refused_part, "ok")])
    assert {s.reference for s in smsc.seen} == {sms.udh_reference}
    message = _message()
    assert message["status"] in ("sent", "delivered") and message["provider_message_ids"] == sms.message_ids


def test_parts_taken_before_a_permanent_refusal_keep_their_ids_and_their_receipts_are_taken(
    client, keys, smsc, smpp
):
    """Part 2 refused for good (ESME_RINVMSGLEN): the SMS fails, nothing is sent again, and the
    receipt of part 1, which the SMSC did take, is acknowledged at once instead of refused (0x64)
    over and over as a receipt for an unknown message."""
    job = _long_sms(client, keys)
    smsc.refuse_part(2, 0x01)
    assert deliver_many([job], provider=smpp)[job].result == "failed"
    wait_until(lambda: smsc.receipt_answers[0] >= 1, 10, what="part 1's receipt acknowledged")
    assert smsc.receipt_answers == Counter({0: 1})  # never refused with 0x64
    message = _message()
    assert message["status"] == "failed" and message["redemption"] == "failed"
    assert "0x01" in message["status_reason"]
    (taken,) = [s.message_id for s in smsc.seen if s.answer == "ok"]
    assert message["provider_message_ids"] == [taken]
    assert deliver_many([job], provider=smpp)[job].result == "nothing to do"
    assert _parts(smsc) == [(1, "ok"), (2, "0x01")]


def test_a_worker_restart_between_attempts_does_not_send_the_taken_parts_again(client, keys, smsc):
    """The parts' state is in the database, not in the process: a new session (a restarted worker)
    sends only the part that is missing."""
    job = _long_sms(client, keys)
    smsc.refuse_part(1, 0x58)
    first = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    now = datetime.now(UTC)
    try:
        assert deliver_many([job], provider=SmppProvider(first), now=now)[job].result == "retry"
    finally:
        first.close()
    second = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    try:
        later = now + timedelta(seconds=5)
        assert deliver_many([job], provider=SmppProvider(second), now=later)[job].result == "sent"
    finally:
        second.close()
    (sms,) = smsc.received
    assert Counter(p for p, answer in _parts(smsc) if answer == "ok") == Counter(range(1, sms.segments + 1))
    assert len({s.reference for s in smsc.seen}) == 1


def test_a_long_sms_is_delivered_when_the_receipts_of_all_its_parts_arrive_across_attempts(
    client, keys, smsc, smpp
):
    """Part 1's receipt arrives while part 2 is still to be sent; the SMS is delivered once part 2's
    receipt arrives too."""
    job = _long_sms(client, keys)
    smsc.refuse_part(2, 0x58)
    now = datetime.now(UTC)
    deliver_many([job], provider=smpp, now=now)
    wait_until(lambda: smsc.receipt_answers[0] >= 1, 10, what="part 1's receipt")
    deliver_many([job], provider=smpp, now=now + timedelta(seconds=5))
    wait_until(lambda: _message()["status"] == "delivered", 10, what="delivered")
    assert _message()["redemption"] == "delivered"


def test_the_rate_limit_counts_submit_sm_pdus_not_messages(client, keys, smsc, smpp):
    """With a budget of 3 PDUs a call, three 2-part SMS go out 3 PDUs at a time: the pace asks for
    parts, never for messages."""
    import_codes_for("ARAY-CINEMA-2000", 0)
    jobs = [_long_sms(client, keys, msisdn=f"870155500{i:02d}") for i in range(3)]
    asked: list[int] = []

    def pace(wanted: int, at_least: int = 1) -> int:
        asked.append(wanted)
        return min(wanted, 3)

    outcomes = deliver_many(jobs, provider=smpp, pace=pace)
    assert {o.result for o in outcomes.values()} == {"sent"}
    parts = sum(m.segments for m in smsc.received)
    assert parts == smsc.submits == 6
    assert asked[0] == parts  # every part of the batch asked for
    assert sum(min(a, 3) for a in asked) >= parts


def test_the_workers_rate_limit_in_redis_counts_every_part(client, keys, smsc, smpp, monkeypatch):
    """Three 2-part SMS under a limit of 4 PDUs a second: the per-second counters in Redis add up
    to the 6 parts, never more than 4 in one second."""
    from service.kit.config import get_settings
    from workers.actors import _pace
    from workers.broker import broker

    provider = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(get_settings(), "sms_provider", provider)
    monkeypatch.setattr(get_settings(), "sms_rate_limit", 4)
    jobs = [_long_sms(client, keys, msisdn=f"870155501{i:02d}") for i in range(3)]
    outcomes = deliver_many(jobs, provider=smpp, pace=_pace)
    assert {o.result for o in outcomes.values()} == {"sent"}
    counters = [int(broker.client.get(k)) for k in broker.client.keys(f"sms-provider-rate:{provider}:*")]
    assert sum(counters) == smsc.submits == 6 and max(counters) <= 4


def test_the_retry_of_a_long_sms_whose_part_2_was_refused_asks_the_rate_limit_for_one_pdu(
    client, keys, smsc, smpp
):
    """Part 2 of a 2-part SMS throttled: the first attempt asks the pacer for both parts, the retry
    for the one part still to send, not the whole message again."""
    job = _long_sms(client, keys)
    smsc.refuse_part(2, 0x58)
    asked: list[int] = []

    def pace(wanted: int, at_least: int = 1) -> int:
        asked.append(wanted)
        return wanted

    now = datetime.now(UTC)
    assert deliver_many([job], provider=smpp, now=now, pace=pace)[job].result == "retry"
    (sms_parts,) = {s.total for s in smsc.seen}
    assert sms_parts == 2 and asked == [2]
    assert deliver_many([job], provider=smpp, now=now + timedelta(seconds=5), pace=pace)[job].result == "sent"
    assert asked == [2, 1]
    assert _parts(smsc) == [(1, "ok"), (2, "0x58"), (2, "ok")]
