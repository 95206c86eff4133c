"""The test SMSC reads and writes SMPP with a codec of its own; smpplib, which our SMPP session
uses, must read what it writes and be read by it alike."""

from __future__ import annotations

import itertools

from smpplib import smpp

from service.delivery.smsc import DELIVER_SM, parse_bind, parse_submit, receipt_pdu
from service.delivery.text import UCS2, split, udh


class _Sequences:
    def __init__(self) -> None:
        self._next = itertools.count(1)
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence = next(self._next)
        return self.sequence


def test_a_submit_sm_built_by_smpplib_reads_the_same_in_the_smsc():
    payload = udh(7, 2, 1) + split("Сіздің кодыңыз: " + "Ж" * 80, UCS2)[0]
    pdu = smpp.make_pdu(
        "submit_sm",
        client=_Sequences(),
        source_addr_ton=5,
        source_addr="Beeline",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="77012345678",
        esm_class=0x40,
        data_coding=0x08,
        registered_delivery=1,
        short_message=payload,
    )
    submit = parse_submit(pdu.generate()[16:])
    assert (submit.source_addr, submit.destination_addr, submit.esm_class, submit.data_coding) == (
        "Beeline",
        "77012345678",
        0x40,
        0x08,
    )
    assert submit.short_message == payload


def test_a_bind_built_by_smpplib_reads_the_same_in_the_smsc():
    pdu = smpp.make_pdu("bind_transceiver", client=_Sequences(), system_id="rewards", password="secret")
    assert parse_bind(pdu.generate()[16:]) == ("rewards", "secret")


def test_a_receipt_built_by_the_smsc_reads_the_same_in_smpplib():
    text = (
        b"id:0000002A sub:001 dlvrd:001 submit date:2611231000 done date:2611231000 stat:DELIVRD err:000"
        b" text:"
    )
    raw = receipt_pdu(42, "0000002A", "77012345678", text, with_tlv=True)
    pdu = smpp.parse_pdu(raw, client=_Sequences())
    assert (pdu.command, pdu.sequence, int(pdu.esm_class)) == ("deliver_sm", 42, 0x04)
    assert (pdu.source_addr, pdu.short_message, pdu.receipted_message_id) == (
        b"77012345678",
        text,
        b"0000002A",
    )
    assert int.from_bytes(raw[4:8], "big") == DELIVER_SM


def test_a_receipt_without_the_tlv_carries_the_id_only_in_its_text():
    raw = receipt_pdu(43, "0000002B", "77012345678", b"id:0000002B stat:DELIVRD", with_tlv=False)
    pdu = smpp.parse_pdu(raw, client=_Sequences())
    assert pdu.short_message == b"id:0000002B stat:DELIVRD" and not getattr(pdu, "receipted_message_id", None)
