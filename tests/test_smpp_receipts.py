"""Receipts in the forms real SMSCs send them: the state only in the message_state TLV (empty text,
or a vendor's `stat:DELIVERED`), as data_sm instead of deliver_sm, with an id that is hex in
submit_sm_resp and decimal in the text. And PDUs the ESME cannot know are answered with generic_nack,
never a reason to drop the session. Each case is a fault mode of the test SMSC."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from service.delivery.providers import SmppProvider, SmppSession
from service.delivery.service import Job, apply_smpp_receipts, deliver_many
from service.delivery.smsc import ESME_RINVCMDID, TestSmsc, receipt_pdu, receipt_text
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


class ContraryTextSmsc(TestSmsc):
    """Receipts whose message_state TLV says one state and whose text another (`stat:UNDELIV`)."""

    text_state = "UNDELIV"

    def _receipt(self, sequence: int, message_id: str, destination: str) -> bytes:
        text_ = receipt_text(message_id, self.text_state)
        return receipt_pdu(sequence, message_id, destination, text_, with_tlv=True, state=self.receipt_state)


class HexReceiptSmsc(TestSmsc):
    """Decimal ids in submit_sm_resp (`10`), the same ids in hex in the receipts (`0000000A`): in the
    text, and in the receipted_message_id TLV when `receipt_id_in` has it."""

    def _receipt(self, sequence: int, message_id: str, destination: str) -> bytes:
        hex_id = f"{int(message_id):08X}"
        return receipt_pdu(
            sequence,
            hex_id,
            destination,
            receipt_text(hex_id, self.receipt_state),
            with_tlv="tlv" in self.receipt_id_in,
        )


def _redeem(client, keys, count: int = 1, offer: str = "cinema-2000", points: int = 2000) -> list[Job]:
    point_webhooks_at("http://127.0.0.1:9/hooks")
    if offer == "cinema-2000":
        import_codes_for("ARAY-CINEMA-2000", count)
    jobs = []
    for i in range(count):
        made = post_redemption(client, keys, offer=offer, points=points, msisdn=f"8701777{i:04d}")
        assert made.status_code == 201, made.text
        jobs.append(Job(uuid.UUID(made.json()["id"]), 0))
    return jobs


def _statuses() -> dict[str, int]:
    with new_session() as s:
        return dict(s.execute(text("SELECT status, count(*) FROM redemptions GROUP BY status")).all())


RECEIPT_FORMS = [
    pytest.param("deliver_sm", "tlv", "tlv", id="state-only-in-message_state-tlv-empty-text"),
    pytest.param("deliver_sm", "tlv", "tlv+vendor-text", id="vendor-text-stat-DELIVERED"),
    pytest.param("deliver_sm", "tlv", "vendor-text", id="vendor-text-only"),
    pytest.param("data_sm", "tlv", "tlv", id="data_sm-with-tlvs"),
    pytest.param("data_sm", "tlv", "tlv+text", id="data_sm-with-payload-text"),
]


@pytest.mark.parametrize("command,id_in,state_in", RECEIPT_FORMS)
def test_receipts_in_every_form_make_the_redemption_delivered(
    client, keys, smsc, smpp, command, id_in, state_in
):
    smsc.receipt_command, smsc.receipt_id_in, smsc.receipt_state_in = command, id_in, state_in
    jobs = _redeem(client, keys, 3)
    assert {o.result for o in deliver_many(jobs, provider=smpp).values()} == {"sent"}
    wait_until(lambda: _statuses() == {"delivered": 3}, 15, what="every receipt applied")
    parts = sum(m.segments for m in smsc.received)
    wait_until(lambda: sum(smsc.receipt_answers.values()) >= parts, 5, what="every acknowledgement")
    assert smsc.receipt_answers == {0: parts}  # each part's receipt acknowledged once, none refused
    if command == "data_sm":
        assert smsc.data_sm_resps == parts


@pytest.mark.parametrize("id_in", ["text", "tlv+text"])
def test_a_receipt_naming_its_message_in_decimal_matches_the_hex_id_of_the_submit(
    client, keys, smsc, smpp, id_in
):
    """The SMSC answers submit_sm with hex ids (0000000A) and writes the decimal (10) in the receipt
    text; with the TLV (hex) the TLV wins, without it the decimal id is matched to the hex one."""
    smsc.id_format, smsc.receipt_id_in = "mixed", id_in
    jobs = _redeem(client, keys, 12)  # ids past 9: hex and decimal spellings differ
    assert {o.result for o in deliver_many(jobs, provider=smpp).values()} == {"sent"}
    wait_until(lambda: _statuses() == {"delivered": 12}, 15, what="every receipt applied")
    parts = sum(m.segments for m in smsc.received)
    wait_until(lambda: sum(smsc.receipt_answers.values()) >= parts, 5, what="every acknowledgement")
    assert smsc.receipt_answers == {0: parts}


def test_a_long_sms_receipted_in_decimal_is_delivered_only_with_every_part(client, keys, smsc, smpp):
    smsc.id_format, smsc.receipt_id_in = "mixed", "text"
    (job,) = _redeem(client, keys, 1, offer="gift-card-5000", points=5000)
    deliver_many([job], provider=smpp)
    wait_until(lambda: _statuses() == {"delivered": 1}, 15, what="delivered")
    with new_session() as s:
        seen = s.execute(text("SELECT receipts, provider_message_ids FROM sms_messages")).one()
    assert set(seen.receipts) == set(seen.provider_message_ids) and len(seen.receipts) >= 2


def test_an_unknown_command_is_answered_with_generic_nack_and_the_session_stays(client, keys, smsc, smpp):
    jobs = _redeem(client, keys, 2)
    deliver_many(jobs[:1], provider=smpp)  # bound
    sequences = smsc.send_unknown_command()
    wait_until(lambda: len(smsc.generic_nacks) == 1, 10, what="the generic_nack")
    assert smsc.generic_nacks == [(ESME_RINVCMDID, sequences[0])]
    assert deliver_many(jobs[1:], provider=smpp)[jobs[1]].result == "sent"
    assert len(smsc.binds) == 1 and smsc.bound_sessions == 1  # the same session throughout


def test_the_message_state_tlv_wins_over_a_receipt_text_that_says_otherwise(client, keys):
    """message_state DELIVERED (2) in the TLV, `stat:UNDELIV` in the text: the TLV is what the SMSC
    means, so the redemption is delivered, not failed."""
    smsc = ContraryTextSmsc(receipt_delay=0.2).start()
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    try:
        (job,) = _redeem(client, keys, 1)
        assert deliver_many([job], provider=SmppProvider(session))[job].result == "sent"
        wait_until(lambda: bool(set(_statuses()) & {"delivered", "failed"}), 10, what="the receipts applied")
    finally:
        session.close()
        smsc.stop()
    assert _statuses() == {"delivered": 1}
    with new_session() as s:
        receipts = s.execute(text("SELECT receipts FROM sms_messages")).scalar_one()
    assert set(receipts.values()) == {"DELIVRD"}


@pytest.mark.parametrize("id_in", ["text", "tlv+text"])
def test_a_receipt_naming_its_message_in_hex_matches_the_decimal_id_of_the_submit(client, keys, id_in):
    """The reverse of the usual mix: the SMSC answers submit_sm with decimal ids (10) and names them
    in hex (0000000A) in its receipts; each receipt is matched to its part."""
    smsc = HexReceiptSmsc(receipt_delay=0.2).start()
    smsc.id_format, smsc.receipt_id_in = "decimal", id_in
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    try:
        jobs = _redeem(client, keys, 12)  # ids past 9: hex and decimal spellings differ
        assert {o.result for o in deliver_many(jobs, provider=SmppProvider(session)).values()} == {"sent"}
        assert {i for m in smsc.received for i in m.message_ids} >= {"10", "11"}
        wait_until(lambda: _statuses() == {"delivered": 12}, 15, what="every receipt applied")
        parts = sum(m.segments for m in smsc.received)
        wait_until(lambda: sum(smsc.receipt_answers.values()) >= parts, 5, what="every acknowledgement")
    finally:
        session.close()
        smsc.stop()
    assert smsc.receipt_answers == {0: parts}  # none refused as unknown
