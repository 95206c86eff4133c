"""A test SMSC: a real SMPP 3.4 server (bind_transceiver, submit_sm with UDH concatenation,
deliver_sm receipts, enquire_link, unbind) for the tests and the local compose stack.

Fault injection for tests: throttle (ESME_RTHROTTLED, or another status such as ESME_RMSGQFUL),
drop connections and refuse new ones for a while, drop the binds and refuse new ones
(ESME_RBINDFAIL) for a while, refuse given destinations (ESME_RINVDSTADR),
receipts with or without the receipted_message_id TLV, enquire_link of its own. Receipts wait per
system_id until a session of it is bound.

Its PDUs are read and written by the small codec below rather than by smpplib: the client side
(our SMPP session) encodes with smpplib, so every test checks smpplib's PDUs against a second,
independent reading of SMPP 3.4; and the stand-in for the operator's SMSC costs the benchmark a
fraction of what smpplib's generic PDU objects cost."""

from __future__ import annotations

import collections
import itertools
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

import structlog

from service.delivery.text import decode_gsm7

log = structlog.get_logger("smsc")
ESME_ROK, ESME_RINVDSTADR, ESME_RTHROTTLED, ESME_RBINDFAIL = 0x00, 0x0B, 0x58, 0x0D


_sequences = itertools.count(1)  # of the PDUs this SMSC originates (deliver_sm)


# SMPP 3.4 command ids (section 5.1.2.1) and the fields this SMSC reads and writes ---------------
BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x01, 0x02, 0x09
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK = 0x04, 0x05, 0x06, 0x15
RESP, GENERIC_NACK = 0x80000000, 0x80000000
ESME_RINVCMDID = 0x03
TAG_RECEIPTED_MESSAGE_ID = 0x001E
_HEADER = struct.Struct(">LLLL")


def _cstring(body: bytes, at: int) -> tuple[bytes, int]:
    end = body.index(b"\0", at)
    return body[at:end], end + 1


def pdu_bytes(command_id: int, sequence: int, body: bytes = b"", status: int = ESME_ROK) -> bytes:
    return _HEADER.pack(16 + len(body), command_id, status, sequence) + body


@dataclass
class Submit:
    """The fields of a submit_sm this SMSC looks at."""

    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes


def parse_submit(body: bytes) -> Submit:
    _service_type, at = _cstring(body, 0)
    source, at = _cstring(body, at + 2)  # after source_addr_ton, source_addr_npi
    destination, at = _cstring(body, at + 2)  # after dest_addr_ton, dest_addr_npi
    esm_class = body[at]
    _schedule, at = _cstring(body, at + 3)  # after esm_class, protocol_id, priority_flag
    _validity, at = _cstring(body, at)
    data_coding, sm_length = body[at + 2], body[at + 4]  # registered_delivery, replace_if_present first
    short_message = body[at + 5 : at + 5 + sm_length]
    return Submit(source.decode(), destination.decode(), esm_class, data_coding, short_message)


def parse_bind(body: bytes) -> tuple[str, str]:
    system_id, at = _cstring(body, 0)
    password, _ = _cstring(body, at)
    return system_id.decode(), password.decode()


def receipt_pdu(sequence: int, message_id: str, destination: str, text: bytes, with_tlv: bool) -> bytes:
    """A deliver_sm carrying a delivery receipt (esm_class 0x04) from the handset `destination`."""
    body = b"".join(
        (
            b"\0",
            b"\x01\x01",
            destination.encode(),
            b"\0",  # service_type, source ton/npi, source_addr
            b"\x05\x00",
            b"rewards\0",  # dest ton/npi, destination_addr
            b"\x04\x00\x00",
            b"\0\0",  # esm_class, protocol_id, priority_flag; schedule, validity
            b"\x00\x00\x00\x00",
            bytes([len(text)]),
            text,  # registered_delivery .. sm_default_msg_id
        )
    )
    if with_tlv:
        value = message_id.encode() + b"\0"
        body += struct.pack(">HH", TAG_RECEIPTED_MESSAGE_ID, len(value)) + value
    return pdu_bytes(DELIVER_SM, sequence, body)


@dataclass
class ReceivedSms:
    to: str
    sender: str
    text: str
    encoding: str
    segments: int
    message_ids: list[str]
    udh_reference: int | None
    received_at: float
    first_part_at: float


@dataclass
class _Session:
    sock: socket.socket
    system_id: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    alive: bool = True
    unacked: dict = field(default_factory=dict)  # deliver_sm sequence -> receipt entry

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)


class TestSmsc:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        receipt_delay: float = 0.0,
        receipt_state: str = "DELIVRD",
        receipt_tlv: bool = True,
        password: str | None = None,
        record: str | None = None,
    ):
        self.receipt_delay = receipt_delay
        # One JSON line per complete message (destination, parts, CLOCK_MONOTONIC times), for a
        # benchmark that runs the SMSC in a process of its own.
        self._record = open(record, "a", buffering=1, encoding="utf-8") if record else None
        self.receipt_state = receipt_state
        self.receipt_tlv = receipt_tlv
        self.password = password
        self.invalid_destinations: set[str] = set()
        self.throttle_until = 0.0
        self.throttle_status = ESME_RTHROTTLED
        self.enquire_links = 0  # received from the ESME
        self.enquire_link_resps = 0  # answers to ours
        self.drop_until = 0.0
        self.refuse_binds_until = 0.0
        self.received: list[ReceivedSms] = []
        self.submits = 0
        self.throttled = 0
        self.receipts_acked = 0
        self._ids = itertools.count(1)
        self._parts: dict[tuple[str, int], dict[int, tuple[bytes, str, float]]] = {}
        self._receipts: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._sessions: list[_Session] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server((host, port), reuse_port=False)
        self._server.settimeout(0.2)
        self.host, self.port = self._server.getsockname()[:2]
        self._threads = [
            threading.Thread(target=self._accept_loop, daemon=True, name="smsc-accept"),
            threading.Thread(target=self._receipt_loop, daemon=True, name="smsc-receipts"),
        ]

    # control ---------------------------------------------------------------------------------
    def start(self) -> TestSmsc:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._drop_all()
        self._server.close()

    def throttle(self, seconds: float, status: int = ESME_RTHROTTLED) -> None:
        """Refuses every submit_sm with `status` (a transient one) for a while."""
        self.throttle_status = status
        self.throttle_until = time.monotonic() + seconds

    def restart_numbering(self) -> None:
        """Gives out message ids from 1 again, as an SMSC does after a restart."""
        self._ids = itertools.count(1)

    def enquire_link(self) -> None:
        """Asks every bound session whether it is alive; answers count in `enquire_link_resps`."""
        with self._lock:
            sessions = [s for s in self._sessions if s.alive and s.system_id is not None]
        for s in sessions:
            s.send(pdu_bytes(ENQUIRE_LINK, next(_sequences)))

    def drop_connections(self, seconds: float) -> None:
        self.drop_until = time.monotonic() + seconds
        self._drop_all()

    def refuse_binds(self, seconds: float) -> None:
        """Drops every bound session and answers binds with ESME_RBINDFAIL for a while (an SMSC in
        maintenance, or one that no longer knows our account)."""
        self.refuse_binds_until = time.monotonic() + seconds
        self._drop_all()

    def count_by_text(self) -> collections.Counter:
        with self._lock:
            return collections.Counter((m.to, m.text) for m in self.received)

    @property
    def bound_sessions(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if s.alive and s.system_id is not None)

    def _drop_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.alive = False
            try:
                s.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.sock.close()

    # network ---------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if time.monotonic() < self.drop_until:
                sock.close()
                continue
            session = _Session(sock)
            with self._lock:
                self._sessions.append(session)
            threading.Thread(target=self._serve, args=(session,), daemon=True, name="smsc-session").start()

    def _serve(self, session: _Session) -> None:
        reader = session.sock.makefile("rb")
        try:
            while session.alive and not self._stop.is_set():
                header = reader.read(16)
                if len(header) < 16:
                    raise ConnectionError("peer closed")
                length, command_id, status, sequence = _HEADER.unpack(header)
                body = reader.read(length - 16)
                if len(body) < length - 16:
                    raise ConnectionError("peer closed")
                self._handle(session, command_id, status, sequence, body)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            session.alive = False
            with self._lock:
                if session in self._sessions:
                    self._sessions.remove(session)
                # receipts never acknowledged go out again on the next bind, like a real SMSC
                for entry in session.unacked.values():
                    self._receipts[session.system_id or ""].appendleft(entry)
                session.unacked.clear()
            try:
                reader.close()
                session.sock.close()
            except OSError:
                pass

    def _handle(self, session: _Session, command_id: int, status: int, sequence: int, body: bytes) -> None:
        if command_id in (BIND_TRANSCEIVER, BIND_TRANSMITTER, BIND_RECEIVER):
            system_id, password = parse_bind(body)
            refused = time.monotonic() < self.refuse_binds_until
            if refused or (self.password is not None and password != self.password):
                session.send(pdu_bytes(command_id | RESP, sequence, b"smsc\0", ESME_RBINDFAIL))
                return
            session.system_id = system_id
            session.send(pdu_bytes(command_id | RESP, sequence, b"test-smsc\0"))
        elif command_id == SUBMIT_SM:
            self._submit(session, sequence, parse_submit(body))
        elif command_id == ENQUIRE_LINK:
            with self._lock:
                self.enquire_links += 1
            session.send(pdu_bytes(ENQUIRE_LINK | RESP, sequence))
        elif command_id == ENQUIRE_LINK | RESP:
            with self._lock:
                self.enquire_link_resps += 1
        elif command_id == DELIVER_SM | RESP:
            with self._lock:
                entry = session.unacked.pop(sequence, None)
                if status == ESME_ROK:
                    self.receipts_acked += 1
                elif entry is not None:  # the ESME could not take it now: offer it again shortly
                    self._receipts[session.system_id or ""].append((time.monotonic() + 0.5, *entry[1:]))
        elif command_id == UNBIND:
            session.send(pdu_bytes(UNBIND | RESP, sequence))
            session.alive = False
        elif not command_id & RESP:
            session.send(pdu_bytes(GENERIC_NACK, sequence, status=ESME_RINVCMDID))

    def _submit(self, session: _Session, sequence: int, pdu: Submit) -> None:
        with self._lock:
            self.submits += 1
        destination = pdu.destination_addr
        if time.monotonic() < self.throttle_until:
            with self._lock:
                self.throttled += 1
            session.send(pdu_bytes(SUBMIT_SM | RESP, sequence, b"\0", self.throttle_status))
            return
        if destination in self.invalid_destinations:
            session.send(pdu_bytes(SUBMIT_SM | RESP, sequence, b"\0", ESME_RINVDSTADR))
            return
        message_id = f"{next(self._ids):08X}"
        raw = pdu.short_message
        encoding = "UCS-2" if pdu.data_coding == 0x08 else "GSM-7"
        sender = pdu.source_addr
        complete: tuple[bytes, list[str], int | None, int, float] | None = None
        arrived = time.monotonic()
        if pdu.esm_class & 0x40:  # UDH: 05 00 03 ref total seq
            udh_len = raw[0]
            ref, total, seq = raw[3], raw[4], raw[5]
            key = (destination, ref)
            with self._lock:
                parts = self._parts.setdefault(key, {})
                parts[seq] = (raw[udh_len + 1 :], message_id, arrived)
                if len(parts) == total:
                    ordered = [parts[i] for i in range(1, total + 1)]
                    del self._parts[key]
                    complete = (
                        b"".join(p[0] for p in ordered),
                        [p[1] for p in ordered],
                        ref,
                        total,
                        min(p[2] for p in ordered),
                    )
        else:
            complete = (raw, [message_id], None, 1, arrived)
        session.send(pdu_bytes(SUBMIT_SM | RESP, sequence, message_id.encode() + b"\0"))
        if complete:
            payload, ids, reference, total, first_at = complete
            text = payload.decode("utf-16-be") if encoding == "UCS-2" else decode_gsm7(payload)
            received = ReceivedSms(
                "+" + destination, sender, text, encoding, total, ids, reference, time.monotonic(), first_at
            )
            with self._lock:
                self.received.append(received)
                if self._record:
                    self._record.write(
                        json.dumps(
                            {
                                "to": received.to,
                                "segments": total,
                                "first_part_at": first_at,
                                "received_at": received.received_at,
                                "first_part_unix": time.time() - time.monotonic() + first_at,
                                "message_ids": ids,
                                "text": text,  # a test SMSC's record: codes in clear, like the file provider
                            }
                        )
                        + "\n"
                    )
        due = time.monotonic() + self.receipt_delay
        with self._lock:
            self._receipts[session.system_id or ""].append((due, message_id, destination))

    def _receipt_loop(self) -> None:
        while not self._stop.is_set():
            sent_any = False
            with self._lock:
                targets = {s.system_id: s for s in self._sessions if s.alive and s.system_id is not None}
            for system_id, session in targets.items():
                queue = self._receipts.get(system_id)
                while queue and queue[0][0] <= time.monotonic():
                    _, message_id, destination = queue[0]
                    stamp = time.strftime("%y%m%d%H%M")
                    text = (
                        f"id:{message_id} sub:001 dlvrd:{'001' if self.receipt_state == 'DELIVRD' else '000'}"
                        f" submit date:{stamp} done date:{stamp} stat:{self.receipt_state} err:000 text:"
                    )
                    sequence = next(_sequences)
                    pdu = receipt_pdu(sequence, message_id, destination, text.encode(), self.receipt_tlv)
                    with self._lock:
                        entry = queue.popleft()
                        session.unacked[sequence] = entry
                    try:
                        session.send(pdu)
                    except OSError:
                        break  # the session's end puts its unacknowledged receipts back
                    sent_any = True
            if not sent_any:
                time.sleep(0.005)


def control(smsc: TestSmsc, command: str) -> None:
    """One fault command, as a script running the SMSC in its own process writes them to its stdin:
    `refuse-binds SECONDS`, `drop` (every connection, now), `drop SECONDS` (and refuse connections
    that long), `throttle SECONDS`."""
    name, *args = command.split()
    seconds = float(args[0]) if args else 0.0
    if name == "refuse-binds":
        smsc.refuse_binds(seconds)
    elif name == "drop":
        smsc.drop_connections(seconds)
    elif name == "throttle":
        smsc.throttle(seconds)
    else:
        raise ValueError(f"unknown SMSC control command {command!r}")
    log.warning("smsc_fault", command=command)


def run_forever(
    host: str,
    port: int,
    receipt_delay: float = 0.0,
    record: str | None = None,
    controlled: bool = False,
) -> None:
    smsc = TestSmsc(host, port, receipt_delay=receipt_delay, record=record).start()
    log.info("smsc_listening", host=smsc.host, port=smsc.port)
    try:
        if controlled:  # fault commands on stdin, one a line, until it closes
            for line in sys.stdin:
                if line.strip():
                    control(smsc, line.strip())
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        smsc.stop()
