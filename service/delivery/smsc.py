"""A test SMSC: a real SMPP 3.4 server (bind_transceiver, or bind_transmitter + bind_receiver;
submit_sm with UDH concatenation, deliver_sm or data_sm receipts, enquire_link, unbind both ways,
generic_nack for what it does not know), optionally behind TLS, for the tests, the benchmarks and
the local compose stack.

Fault modes, each the behaviour of some operator's SMSC (docs/delivery.md has the table):
- throttle every submit_sm (ESME_RTHROTTLED, or another status) for a while; refuse part N of long
  messages with a status or a generic_nack (`refuse_part`); refuse given destinations;
- receipts as deliver_sm or data_sm; their id in the receipted_message_id TLV, the text, or both;
  the state in the text (`stat:DELIVRD`, or vendor words such as `stat:DELIVERED`), the
  message_state TLV, or both; ids in hex, decimal, or hex in submit_sm_resp and decimal in the
  receipt text;
- drop every connection, and refuse new ones for a while; drop the binds and refuse new ones
  (ESME_RBINDFAIL); drop with submits in flight (read, answered never, taken or not); unbind from
  the SMSC's side; send a PDU with a command id the ESME cannot know; answer late (to see the ESME's
  window); enquire_link of its own.
Receipts wait per system_id until a session of it that may receive (receiver or transceiver) is
bound, and those never acknowledged are offered again.

Its PDUs are read and written by the small codec below rather than by smpplib: the client side
(our SMPP session) encodes with smpplib, so every test checks smpplib's PDUs against a second,
independent reading of SMPP 3.4; and the stand-in for the operator's SMSC costs the benchmark a
fraction of what smpplib's generic PDU objects cost."""

from __future__ import annotations

import collections
import heapq
import itertools
import json
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

import structlog

from service.delivery.text import decode_gsm7

log = structlog.get_logger("smsc")
ESME_ROK, ESME_RINVDSTADR, ESME_RTHROTTLED, ESME_RBINDFAIL = 0x00, 0x0B, 0x58, 0x0D
ESME_RINVCMDID, ESME_RINVBNDSTS = 0x03, 0x04


_sequences = itertools.count(1)  # of the PDUs this SMSC originates (deliver_sm, data_sm, unbind, ...)


# SMPP 3.4 command ids (section 5.1.2.1) and the fields this SMSC reads and writes ---------------
BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x01, 0x02, 0x09
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK, DATA_SM = 0x04, 0x05, 0x06, 0x15, 0x103
RESP, GENERIC_NACK = 0x80000000, 0x80000000
UNKNOWN_COMMAND = 0x00000999  # no command of SMPP 3.4 (or 5.0) has this id
TAG_RECEIPTED_MESSAGE_ID, TAG_MESSAGE_STATE, TAG_MESSAGE_PAYLOAD = 0x001E, 0x0427, 0x0424
_HEADER = struct.Struct(">LLLL")
# message_state values (SMPP 3.4 section 5.2.28) of the text's states
MESSAGE_STATES = {
    "ENROUTE": 1,
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "UNKNOWN": 7,
    "REJECTD": 8,
}
# how vendors spell them in receipt texts, where the text is not Appendix B's
VENDOR_WORDS = {
    "DELIVRD": "DELIVERED",
    "UNDELIV": "UNDELIVERABLE",
    "REJECTD": "REJECTED",
    "ACCEPTD": "ACCEPTED",
}
BIND_KINDS = {BIND_TRANSCEIVER: "transceiver", BIND_TRANSMITTER: "transmitter", BIND_RECEIVER: "receiver"}


def _cstring(body: bytes, at: int) -> tuple[bytes, int]:
    end = body.index(b"\0", at)
    return body[at:end], end + 1


def pdu_bytes(command_id: int, sequence: int, body: bytes = b"", status: int = ESME_ROK) -> bytes:
    return _HEADER.pack(16 + len(body), command_id, status, sequence) + body


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


@dataclass
class Submit:
    """The fields of a submit_sm this SMSC looks at."""

    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes
    source_ton: int = 0
    source_npi: int = 0
    dest_ton: int = 0
    dest_npi: int = 0
    registered_delivery: int = 0

    @property
    def udh(self) -> tuple[int, int, int] | None:
        """(reference, total, sequence) of a concatenated part (UDH 05 00 03 ref total seq)."""
        raw = self.short_message
        if self.esm_class & 0x40 and len(raw) >= 6 and raw[1] == 0x00:
            return raw[3], raw[4], raw[5]
        return None


def parse_submit(body: bytes) -> Submit:
    _service_type, at = _cstring(body, 0)
    source_ton, source_npi = body[at], body[at + 1]
    source, at = _cstring(body, at + 2)
    dest_ton, dest_npi = body[at], body[at + 1]
    destination, at = _cstring(body, at + 2)
    esm_class = body[at]
    _schedule, at = _cstring(body, at + 3)  # after esm_class, protocol_id, priority_flag
    _validity, at = _cstring(body, at)
    registered_delivery = body[at]
    data_coding, sm_length = body[at + 2], body[at + 4]  # replace_if_present, sm_default_msg_id between
    short_message = body[at + 5 : at + 5 + sm_length]
    return Submit(
        source.decode(),
        destination.decode(),
        esm_class,
        data_coding,
        short_message,
        source_ton,
        source_npi,
        dest_ton,
        dest_npi,
        registered_delivery,
    )


def parse_bind(body: bytes) -> tuple[str, str]:
    system_id, at = _cstring(body, 0)
    password, _ = _cstring(body, at)
    return system_id.decode(), password.decode()


def parse_bind_system_type(body: bytes) -> str:
    _, at = _cstring(body, 0)
    _, at = _cstring(body, at)
    system_type, _ = _cstring(body, at)
    return system_type.decode()


def receipt_text(message_id: str, state: str, vendor: bool = False) -> bytes:
    """The text of a receipt (SMPP 3.4 Appendix B), or a vendor's own words for its state."""
    stamp = time.strftime("%y%m%d%H%M")
    word = VENDOR_WORDS.get(state, state) if vendor else state
    return (
        f"id:{message_id} sub:001 dlvrd:{'001' if state == 'DELIVRD' else '000'}"
        f" submit date:{stamp} done date:{stamp} stat:{word} err:000 text:"
    ).encode()


def receipt_pdu(
    sequence: int,
    message_id: str,
    destination: str,
    text: bytes,
    with_tlv: bool,
    state: str | None = None,
    tlv_id: str | None = None,
) -> bytes:
    """A deliver_sm carrying a delivery receipt (esm_class 0x04) from the handset `destination`; with
    the receipted_message_id TLV (`tlv_id`, default `message_id`) if `with_tlv`, the message_state TLV
    if `state`."""
    body = b"".join(
        (
            b"\0",  # service_type
            b"\x01\x01",
            destination.encode(),
            b"\0",  # source ton/npi, source_addr
            b"\x05\x00",
            b"rewards\0",  # dest ton/npi, destination_addr
            b"\x04\x00\x00",  # esm_class, protocol_id, priority_flag
            b"\0\0",  # schedule, validity
            b"\x00\x00\x00\x00",  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
            bytes([len(text)]),
            text,
        )
    )
    if with_tlv:
        body += tlv(TAG_RECEIPTED_MESSAGE_ID, (tlv_id or message_id).encode() + b"\0")
    if state is not None:
        body += tlv(TAG_MESSAGE_STATE, bytes([MESSAGE_STATES.get(state, 7)]))
    return pdu_bytes(DELIVER_SM, sequence, body)


def data_sm_receipt_pdu(
    sequence: int, message_id: str, destination: str, state: str, text: bytes = b""
) -> bytes:
    """A data_sm carrying a delivery receipt: receipted_message_id and message_state TLVs, and the
    receipt text in message_payload when there is one."""
    body = b"".join(
        (
            b"\0",  # service_type
            b"\x01\x01",
            destination.encode(),
            b"\0",
            b"\x05\x00",
            b"rewards\0",
            b"\x04\x00\x00",  # esm_class (receipt), registered_delivery, data_coding
        )
    )
    body += tlv(TAG_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\0")
    body += tlv(TAG_MESSAGE_STATE, bytes([MESSAGE_STATES.get(state, 7)]))
    if text:
        body += tlv(TAG_MESSAGE_PAYLOAD, text)
    return pdu_bytes(DATA_SM, sequence, body)


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
    source_ton: int = 0
    source_npi: int = 0


@dataclass
class SubmitSeen:
    """One submit_sm as it arrived (every part of every attempt)."""

    to: str
    reference: int | None
    part: int
    total: int
    at: float
    answer: str  # "ok", "0x58", "generic_nack", "none" (in flight at a drop), ...
    message_id: str | None
    session: int


@dataclass
class BindSeen:
    kind: str  # transceiver, transmitter, receiver
    system_id: str
    system_type: str
    session: int
    tls: bool


@dataclass
class _Session:
    sock: socket.socket
    number: int
    system_id: str | None = None
    kind: str | None = None  # transceiver, transmitter, receiver once bound
    lock: threading.Lock = field(default_factory=threading.Lock)
    alive: bool = True
    unacked: dict = field(default_factory=dict)  # receipt sequence -> receipt entry
    outstanding: int = 0  # submit_sm read and not answered yet
    unbind_sent: int | None = None  # sequence of our unbind, until its unbind_resp
    tls: bool = False

    @property
    def receives(self) -> bool:
        return self.system_id is not None and self.kind in ("transceiver", "receiver")

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)


@dataclass
class _PartFault:
    part: int
    status: int  # the submit_sm_resp status; None-like GENERIC_NACK for a generic_nack
    times: int  # how many submits of that part it refuses


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
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.receipt_delay = receipt_delay
        # One JSON line per complete message (destination, parts, CLOCK_MONOTONIC times), for a
        # benchmark that runs the SMSC in a process of its own; and its faults, in `<record>.events`.
        self._record = open(record, "a", buffering=1, encoding="utf-8") if record else None  # noqa: SIM115
        self._events = open(record + ".events", "a", buffering=1, encoding="utf-8") if record else None  # noqa: SIM115
        self.receipt_state = receipt_state
        # How receipts travel: "deliver_sm" or "data_sm"; where their id is ("tlv+text", "text",
        # "tlv"); their state ("text", "vendor-text", "tlv", "tlv+text", "tlv+vendor-text").
        self.receipt_command = "deliver_sm"
        self.receipt_id_in = "tlv+text" if receipt_tlv else "text"
        self.receipt_state_in = "text"
        # Message ids: "hex" everywhere, "decimal" everywhere, or "mixed": hex in submit_sm_resp
        # and the TLV, decimal in the receipt text.
        self.id_format = "hex"
        self.password = password
        self.ssl_context = ssl_context
        self.invalid_destinations: set[str] = set()
        self.throttle_until = 0.0
        self.throttle_status = ESME_RTHROTTLED
        self.part_faults: dict[int, _PartFault] = {}
        self.response_delay = 0.0  # seconds before a submit_sm_resp goes out
        self.enquire_links = 0  # received from the ESME
        self.enquire_link_resps = 0  # answers to ours
        self.unbinds_received = 0  # the ESME's unbind, answered
        self.unbind_resps = 0  # the ESME's answers to our unbind
        self.answer_unbind = True  # False: an SMSC that never answers the ESME's unbind
        self.generic_nacks: list[tuple[int, int]] = []  # (status, sequence) the ESME sent us
        self.data_sm_resps = 0
        self.drop_until = 0.0
        self.refuse_binds_until = 0.0
        self.received: list[ReceivedSms] = []
        # every submit_sm (the latest 200,000: a long-running local SMSC must not grow without end)
        self.seen: collections.deque[SubmitSeen] = collections.deque(maxlen=200_000)
        self.binds: list[BindSeen] = []
        self.max_outstanding = 0  # the most submit_sm of one session in flight at once
        self.submits = 0
        self.throttled = 0
        self.receipts_acked = 0
        self.receipt_answers: collections.Counter = collections.Counter()  # deliver_sm/data_sm_resp statuses
        self.closed_after_unbind = 0  # sessions the ESME closed after our unbind_resp / its unbind_resp
        self._ids = itertools.count(1)
        self._sessions_made = itertools.count(1)
        self._parts: dict[tuple[str, int], dict[int, tuple[bytes, str, float]]] = {}
        self._receipts: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._sessions: list[_Session] = []
        self._in_flight_drop: dict | None = None  # "drop with submits in flight", while it gathers
        self._late: list[tuple[float, int, _Session, bytes]] = []  # delayed answers (due, n, session, pdu)
        self._late_seq = itertools.count()
        self._late_ready = threading.Condition()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server((host, port), reuse_port=False)
        self._server.settimeout(0.2)
        self.host, self.port = self._server.getsockname()[:2]
        self._threads = [
            threading.Thread(target=self._accept_loop, daemon=True, name="smsc-accept"),
            threading.Thread(target=self._receipt_loop, daemon=True, name="smsc-receipts"),
            threading.Thread(target=self._late_loop, daemon=True, name="smsc-late"),
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
        with self._late_ready:
            self._late_ready.notify_all()

    def throttle(self, seconds: float, status: int = ESME_RTHROTTLED) -> None:
        """Refuses every submit_sm with `status` (a transient one) for a while."""
        self.throttle_status = status
        self.throttle_until = time.monotonic() + seconds

    def refuse_part(self, part: int, status: int = ESME_RTHROTTLED, times: int = 1) -> None:
        """Refuses the next `times` submits of part `part` (1-based) of concatenated messages with
        `status`, or with a generic_nack when `status` is GENERIC_NACK; the other parts are taken."""
        with self._lock:
            self.part_faults[part] = _PartFault(part, status, times)

    def restart_numbering(self) -> None:
        """Gives out message ids from 1 again, as an SMSC does after a restart."""
        self._ids = itertools.count(1)

    def enquire_link(self) -> None:
        """Asks every bound session whether it is alive; answers count in `enquire_link_resps`."""
        for s in self._bound():
            s.send(pdu_bytes(ENQUIRE_LINK, next(_sequences)))

    def send_unknown_command(self, command_id: int = UNKNOWN_COMMAND) -> list[int]:
        """Sends every bound session a PDU with a command id no ESME knows; an ESME must answer it with
        generic_nack (ESME_RINVCMDID) and keep the session. Returns the sequence numbers used."""
        sent = []
        for s in self._bound():
            sequence = next(_sequences)
            s.send(pdu_bytes(command_id, sequence, b"\x01\x02\x03"))
            sent.append(sequence)
        return sent

    def unbind(self) -> int:
        """Unbinds every bound session from the SMSC's side (as in a maintenance window): sends
        `unbind`, and closes the session once the ESME has answered with unbind_resp (or after 5 s).
        Returns how many sessions it asked."""
        sessions = self._bound()
        for s in sessions:
            sequence = next(_sequences)
            s.unbind_sent = sequence
            s.send(pdu_bytes(UNBIND, sequence))
            threading.Timer(5.0, self._close, args=(s,)).start()
        self._event("unbind", sessions=len(sessions))
        return len(sessions)

    def drop_connections(self, seconds: float) -> None:
        self.drop_until = time.monotonic() + seconds
        self._event("drop", refuse_s=seconds)
        self._drop_all()

    def drop_with_submits_in_flight(self, count: int, take: str = "alternate", within: float = 2.0) -> None:
        """Reads the next `count` submit_sm without answering any of them, then drops every connection
        (or after `within` seconds, with what it has). `take`: "all" (the SMSC took them: they go to
        the handset, their receipts follow), "none" (it never did), or "alternate" (every other
        message, by destination)."""
        with self._lock:
            self._in_flight_drop = {"count": count, "take": take, "held": [], "taken_to": {}}
        threading.Timer(within, self._finish_in_flight_drop).start()

    def refuse_binds(self, seconds: float) -> None:
        """Drops every bound session and answers binds with ESME_RBINDFAIL for a while (an SMSC in
        maintenance, or one that no longer knows our account)."""
        self.refuse_binds_until = time.monotonic() + seconds
        self._event("refuse-binds", seconds=seconds)
        self._drop_all()

    def count_by_text(self) -> collections.Counter:
        with self._lock:
            return collections.Counter((m.to, m.text) for m in self.received)

    @property
    def bound_sessions(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if s.alive and s.system_id is not None)

    def _bound(self) -> list[_Session]:
        with self._lock:
            return [s for s in self._sessions if s.alive and s.system_id is not None]

    def _event(self, name: str, **fields: object) -> None:
        if self._events:
            self._events.write(json.dumps({"event": name, "at": time.monotonic(), **fields}) + "\n")

    def _close(self, session: _Session) -> None:
        session.alive = False
        try:
            session.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        session.sock.close()

    def _drop_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            self._close(s)

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
            threading.Thread(target=self._serve, args=(sock,), daemon=True, name="smsc-session").start()

    def _serve(self, sock: socket.socket) -> None:
        tls = self.ssl_context is not None
        if self.ssl_context is not None:
            try:
                sock.settimeout(5)
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            except (OSError, ssl.SSLError):
                sock.close()
                return
        session = _Session(sock, next(self._sessions_made), tls=tls)
        with self._lock:
            self._sessions.append(session)
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
            session.kind = BIND_KINDS[command_id]
            session.system_id = system_id
            with self._lock:
                self.binds.append(
                    BindSeen(
                        session.kind, system_id, parse_bind_system_type(body), session.number, session.tls
                    )
                )
            session.send(pdu_bytes(command_id | RESP, sequence, b"test-smsc\0"))
        elif command_id == SUBMIT_SM:
            if session.kind == "receiver" or session.system_id is None:
                session.send(pdu_bytes(SUBMIT_SM | RESP, sequence, b"\0", ESME_RINVBNDSTS))
                return
            self._submit(session, sequence, parse_submit(body))
        elif command_id == ENQUIRE_LINK:
            with self._lock:
                self.enquire_links += 1
            session.send(pdu_bytes(ENQUIRE_LINK | RESP, sequence))
        elif command_id == ENQUIRE_LINK | RESP:
            with self._lock:
                self.enquire_link_resps += 1
        elif command_id in (DELIVER_SM | RESP, DATA_SM | RESP):
            with self._lock:
                if command_id == DATA_SM | RESP:
                    self.data_sm_resps += 1
                entry = session.unacked.pop(sequence, None)
                self.receipt_answers[status] += 1
                if status == ESME_ROK:
                    self.receipts_acked += 1
                elif entry is not None:  # the ESME could not take it now: offer it again shortly
                    self._receipts[session.system_id or ""].append((time.monotonic() + 0.5, *entry[1:]))
        elif command_id == GENERIC_NACK:
            with self._lock:
                self.generic_nacks.append((status, sequence))
        elif command_id == UNBIND:
            with self._lock:
                self.unbinds_received += 1
            if not self.answer_unbind:
                return
            session.send(pdu_bytes(UNBIND | RESP, sequence))
            self._wait_for_close(session)
        elif command_id == UNBIND | RESP:
            with self._lock:
                if session.unbind_sent == sequence:
                    self.unbind_resps += 1
            self._flush_late(session)  # an SMSC answers what it took before it closes
            self._close(session)
        elif not command_id & RESP:
            session.send(pdu_bytes(GENERIC_NACK, sequence, status=ESME_RINVCMDID))

    def _wait_for_close(self, session: _Session) -> None:
        """After our unbind_resp the ESME closes the connection: count it when it does (2 s at most)."""
        session.sock.settimeout(2.0)
        try:
            if session.sock.recv(1) == b"":
                with self._lock:
                    self.closed_after_unbind += 1
        except (OSError, ValueError):
            pass
        self._close(session)

    def _answer(self, session: _Session, pdu: bytes) -> None:
        if self.response_delay <= 0:
            with self._lock:
                session.outstanding -= 1
            session.send(pdu)
            return
        with self._late_ready:
            heapq.heappush(
                self._late, (time.monotonic() + self.response_delay, next(self._late_seq), session, pdu)
            )
            self._late_ready.notify()

    def _flush_late(self, session: _Session) -> None:
        with self._late_ready:
            mine = [entry for entry in self._late if entry[2] is session]
            self._late = [entry for entry in self._late if entry[2] is not session]
            heapq.heapify(self._late)
        for _, _, _, pdu in sorted(mine, key=lambda entry: entry[:2]):
            with self._lock:
                session.outstanding -= 1
            try:
                session.send(pdu)
            except OSError:
                return

    def _late_loop(self) -> None:
        while not self._stop.is_set():
            with self._late_ready:
                while not self._late and not self._stop.is_set():
                    self._late_ready.wait(0.2)
                if not self._late:
                    continue
                due, _, session, pdu = self._late[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._late_ready.wait(wait)
                    continue
                heapq.heappop(self._late)
            with self._lock:
                session.outstanding -= 1
            try:
                session.send(pdu)
            except OSError:
                pass

    def _submit(self, session: _Session, sequence: int, pdu: Submit) -> None:
        arrived = time.monotonic()
        udh = pdu.udh
        reference, total, part = udh if udh else (None, 1, 1)
        destination = pdu.destination_addr
        with self._lock:
            self.submits += 1
            session.outstanding += 1
            self.max_outstanding = max(self.max_outstanding, session.outstanding)
            drop = self._in_flight_drop
            fault = self.part_faults.get(part) if udh else None
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self.part_faults[part]

        def seen(answer: str, message_id: str | None = None) -> None:
            with self._lock:
                self.seen.append(
                    SubmitSeen(
                        "+" + destination, reference, part, total, arrived, answer, message_id, session.number
                    )
                )

        if drop is not None:  # held: in flight when the connection drops
            self._hold(session, pdu, drop, seen)
            return
        if arrived < self.throttle_until:
            with self._lock:
                self.throttled += 1
            seen(f"0x{self.throttle_status:02X}")
            self._answer(session, pdu_bytes(SUBMIT_SM | RESP, sequence, b"\0", self.throttle_status))
            return
        if fault is not None:
            if fault.status == GENERIC_NACK:
                seen("generic_nack")
                self._answer(session, pdu_bytes(GENERIC_NACK, sequence, status=0x08))
            else:
                if fault.status in (ESME_RTHROTTLED, 0x14):
                    with self._lock:
                        self.throttled += 1
                seen(f"0x{fault.status:02X}")
                self._answer(session, pdu_bytes(SUBMIT_SM | RESP, sequence, b"\0", fault.status))
            return
        if destination in self.invalid_destinations:
            seen(f"0x{ESME_RINVDSTADR:02X}")
            self._answer(session, pdu_bytes(SUBMIT_SM | RESP, sequence, b"\0", ESME_RINVDSTADR))
            return
        message_id = self._take(session, pdu, arrived)
        seen("ok", message_id)
        self._answer(session, pdu_bytes(SUBMIT_SM | RESP, sequence, message_id.encode() + b"\0"))

    def _new_id(self) -> str:
        number = next(self._ids)
        return str(number) if self.id_format == "decimal" else f"{number:08X}"

    def _take(self, session: _Session, pdu: Submit, arrived: float) -> str:
        """The SMSC takes a part: gives it an id, puts it together with its other parts, and queues
        its receipt. Returns the id."""
        message_id = self._new_id()
        destination = pdu.destination_addr
        raw = pdu.short_message
        encoding = "UCS-2" if pdu.data_coding == 0x08 else "GSM-7"
        complete: tuple[bytes, list[str], int | None, int, float] | None = None
        udh = pdu.udh
        if udh:
            ref, total, seq = udh
            key = (destination, ref)
            with self._lock:
                parts = self._parts.setdefault(key, {})
                parts[seq] = (raw[raw[0] + 1 :], message_id, arrived)
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
        if complete:
            payload, ids, reference, total, first_at = complete
            text = payload.decode("utf-16-be") if encoding == "UCS-2" else decode_gsm7(payload)
            received = ReceivedSms(
                "+" + destination,
                pdu.source_addr,
                text,
                encoding,
                total,
                ids,
                reference,
                time.monotonic(),
                first_at,
                pdu.source_ton,
                pdu.source_npi,
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
        if pdu.registered_delivery & 0x01:
            due = time.monotonic() + self.receipt_delay
            with self._lock:
                self._receipts[session.system_id or ""].append((due, message_id, destination))
        return message_id

    def _hold(self, session: _Session, pdu: Submit, drop: dict, seen) -> None:
        take = drop["take"]
        if take == "alternate":
            taken = drop["taken_to"].setdefault(pdu.destination_addr, len(drop["taken_to"]) % 2 == 0)
        else:
            taken = take == "all"
        message_id = self._take(session, pdu, time.monotonic()) if taken else None
        seen("none", message_id)
        with self._lock:
            drop["held"].append((pdu.destination_addr, taken))
            full = len(drop["held"]) >= drop["count"]
        if full:
            self._finish_in_flight_drop()

    def _finish_in_flight_drop(self) -> None:
        with self._lock:
            drop, self._in_flight_drop = self._in_flight_drop, None
        if drop is None:
            return
        held = drop["held"]
        self._event(
            "drop-in-flight",
            held=len(held),
            taken=sum(1 for _, t in held if t),
            destinations=sorted({"+" + d for d, _ in held}),
        )
        log.warning("smsc_drop_in_flight", held=len(held), taken=sum(1 for _, t in held if t))
        self._drop_all()

    def _receipt_loop(self) -> None:
        while not self._stop.is_set():
            sent_any = False
            with self._lock:
                targets = {s.system_id or "": s for s in self._sessions if s.alive and s.receives}
            for system_id, session in targets.items():
                queue = self._receipts.get(system_id)
                while queue and queue[0][0] <= time.monotonic():
                    _, message_id, destination = queue[0]
                    sequence = next(_sequences)
                    pdu = self._receipt(sequence, message_id, destination)
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

    def _receipt(self, sequence: int, message_id: str, destination: str) -> bytes:
        state = self.receipt_state
        text_id = str(int(message_id, 16)) if self.id_format == "mixed" else message_id
        if self.receipt_command == "data_sm":
            text = receipt_text(text_id, state) if "text" in self.receipt_state_in else b""
            return data_sm_receipt_pdu(sequence, message_id, destination, state, text)
        with_text = "text" in self.receipt_state_in or "text" in self.receipt_id_in
        vendor = "vendor" in self.receipt_state_in
        text = receipt_text(text_id, state, vendor) if with_text else b""
        return receipt_pdu(
            sequence,
            message_id,
            destination,
            text,
            with_tlv="tlv" in self.receipt_id_in,
            state=state if "tlv" in self.receipt_state_in else None,
        )


def control(smsc: TestSmsc, command: str) -> None:
    """One fault command, as a script running the SMSC in its own process writes them to its stdin:
    `refuse-binds SECONDS`, `drop` (every connection, now), `drop SECONDS` (and refuse connections
    that long), `drop-in-flight COUNT [all|none|alternate]` (hold the next COUNT submits unanswered,
    then drop), `unbind`, `throttle SECONDS`, `refuse-part PART STATUS [TIMES]` (STATUS hex, or
    `nack`), `unknown-command`, `receipts COMMAND ID_IN STATE_IN` (e.g. `receipts data_sm tlv tlv`),
    `ids hex|decimal|mixed`."""
    name, *args = command.split()
    seconds = float(args[0]) if args and name in ("refuse-binds", "drop", "throttle") else 0.0
    if name == "refuse-binds":
        smsc.refuse_binds(seconds)
    elif name == "drop":
        smsc.drop_connections(seconds)
    elif name == "drop-in-flight":
        smsc.drop_with_submits_in_flight(int(args[0]), args[1] if len(args) > 1 else "alternate")
    elif name == "unbind":
        smsc.unbind()
    elif name == "throttle":
        smsc.throttle(seconds)
    elif name == "refuse-part":
        status = GENERIC_NACK if args[1] == "nack" else int(args[1], 16)
        smsc.refuse_part(int(args[0]), status, int(args[2]) if len(args) > 2 else 1)
    elif name == "unknown-command":
        smsc.send_unknown_command()
    elif name == "receipts":
        smsc.receipt_command, smsc.receipt_id_in, smsc.receipt_state_in = args
    elif name == "ids":
        smsc.id_format = args[0]
    else:
        raise ValueError(f"unknown SMSC control command {command!r}")
    log.warning("smsc_fault", command=command)


def run_forever(
    host: str,
    port: int,
    receipt_delay: float = 0.0,
    record: str | None = None,
    controlled: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    smsc = TestSmsc(host, port, receipt_delay=receipt_delay, record=record, ssl_context=ssl_context).start()
    log.info("smsc_listening", host=smsc.host, port=smsc.port, tls=ssl_context is not None)
    try:
        if controlled:  # fault commands on stdin, one a line, until it closes
            for line in sys.stdin:
                if line.strip():
                    control(smsc, line.strip())
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        smsc.stop()
