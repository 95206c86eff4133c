"""A test SMSC: a real SMPP 3.4 server (bind_transceiver, submit_sm with UDH concatenation,
deliver_sm receipts, enquire_link, unbind) for the tests and the local compose stack.

Fault injection for tests: throttle (ESME_RTHROTTLED), drop connections and refuse new ones for a
while, refuse given destinations (ESME_RINVDSTADR), receipts with or without the
receipted_message_id TLV. Receipts wait per system_id until a session of it is bound."""
from __future__ import annotations

import collections
import itertools
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import structlog
from smpplib import smpp

from service.delivery.text import decode_gsm7

log = structlog.get_logger("smsc")
ESME_ROK, ESME_RINVDSTADR, ESME_RTHROTTLED, ESME_RBINDFAIL = 0x00, 0x0B, 0x58, 0x0D


class _Sequences:
    """What smpplib asks of a "client" when it builds or parses PDUs: sequence numbers."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence = next(self._next)
        return self.sequence


_SEQ = _Sequences()


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

    def send(self, pdu) -> None:
        data = pdu.generate()
        with self.lock:
            self.sock.sendall(data)


class TestSmsc:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, receipt_delay: float = 0.0,
                 receipt_state: str = "DELIVRD", receipt_tlv: bool = True, password: str | None = None,
                 record: str | None = None):
        self.receipt_delay = receipt_delay
        # One JSON line per complete message (destination, parts, CLOCK_MONOTONIC times), for a
        # benchmark that runs the SMSC in a process of its own.
        self._record = open(record, "a", buffering=1, encoding="utf-8") if record else None
        self.receipt_state = receipt_state
        self.receipt_tlv = receipt_tlv
        self.password = password
        self.invalid_destinations: set[str] = set()
        self.throttle_until = 0.0
        self.drop_until = 0.0
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
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True, name="smsc-accept"),
                         threading.Thread(target=self._receipt_loop, daemon=True, name="smsc-receipts")]

    # control ---------------------------------------------------------------------------------
    def start(self) -> TestSmsc:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._drop_all()
        self._server.close()

    def throttle(self, seconds: float) -> None:
        self.throttle_until = time.monotonic() + seconds

    def drop_connections(self, seconds: float) -> None:
        self.drop_until = time.monotonic() + seconds
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
            except (socket.timeout, OSError):
                continue
            if time.monotonic() < self.drop_until:
                sock.close()
                continue
            session = _Session(sock)
            with self._lock:
                self._sessions.append(session)
            threading.Thread(target=self._serve, args=(session,), daemon=True, name="smsc-session").start()

    @staticmethod
    def _read_exact(sock: socket.socket, size: int) -> bytes:
        chunks, got = [], 0
        while got < size:
            chunk = sock.recv(size - got)
            if not chunk:
                raise ConnectionError("peer closed")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _serve(self, session: _Session) -> None:
        try:
            while session.alive and not self._stop.is_set():
                header = self._read_exact(session.sock, 4)
                length = struct.unpack(">L", header)[0]
                pdu = smpp.parse_pdu(header + self._read_exact(session.sock, length - 4), client=_SEQ,
                                      allow_unknown_opt_params=True)
                self._handle(session, pdu)
        except (ConnectionError, OSError):
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
                session.sock.close()
            except OSError:
                pass

    def _reply(self, session: _Session, command: str, request, **fields) -> None:
        pdu = smpp.make_pdu(command, client=_SEQ, sequence=request.sequence, **fields)
        pdu.sequence = request.sequence
        session.send(pdu)

    def _handle(self, session: _Session, pdu) -> None:
        command = pdu.command
        if command in ("bind_transceiver", "bind_transmitter", "bind_receiver"):
            system_id = pdu.system_id.decode() if isinstance(pdu.system_id, bytes) else str(pdu.system_id)
            password = pdu.password.decode() if isinstance(pdu.password, bytes) else str(pdu.password or "")
            if self.password is not None and password != self.password:
                self._reply(session, f"{command}_resp", pdu, status=ESME_RBINDFAIL, system_id="smsc")
                return
            session.system_id = system_id
            self._reply(session, f"{command}_resp", pdu, system_id="test-smsc")
        elif command == "submit_sm":
            self._submit(session, pdu)
        elif command == "enquire_link":
            self._reply(session, "enquire_link_resp", pdu)
        elif command == "deliver_sm_resp":
            with self._lock:
                entry = session.unacked.pop(pdu.sequence, None)
                if int(pdu.status or 0) == ESME_ROK:
                    self.receipts_acked += 1
                elif entry is not None:  # the ESME could not take it now: offer it again shortly
                    self._receipts[session.system_id or ""].append((time.monotonic() + 0.5, *entry[1:]))
        elif command == "unbind":
            self._reply(session, "unbind_resp", pdu)
            session.alive = False

    def _submit(self, session: _Session, pdu) -> None:
        with self._lock:
            self.submits += 1
        destination = pdu.destination_addr.decode() if isinstance(pdu.destination_addr, bytes) else pdu.destination_addr
        if time.monotonic() < self.throttle_until:
            with self._lock:
                self.throttled += 1
            self._reply(session, "submit_sm_resp", pdu, status=ESME_RTHROTTLED, message_id="")
            return
        if destination in self.invalid_destinations:
            self._reply(session, "submit_sm_resp", pdu, status=ESME_RINVDSTADR, message_id="")
            return
        message_id = f"{next(self._ids):08X}"
        raw = pdu.short_message or b""
        raw = raw if isinstance(raw, bytes) else raw.encode()
        encoding = "UCS-2" if int(pdu.data_coding or 0) == 0x08 else "GSM-7"
        sender = pdu.source_addr.decode() if isinstance(pdu.source_addr, bytes) else pdu.source_addr
        complete = None
        arrived = time.monotonic()
        if int(pdu.esm_class or 0) & 0x40:  # UDH: 05 00 03 ref total seq
            udh_len = raw[0]
            ref, total, seq = raw[3], raw[4], raw[5]
            key = (destination, ref)
            with self._lock:
                parts = self._parts.setdefault(key, {})
                parts[seq] = (raw[udh_len + 1:], message_id, arrived)
                if len(parts) == total:
                    ordered = [parts[i] for i in range(1, total + 1)]
                    del self._parts[key]
                    complete = (b"".join(p[0] for p in ordered), [p[1] for p in ordered], ref, total,
                                min(p[2] for p in ordered))
        else:
            complete = (raw, [message_id], None, 1, arrived)
        self._reply(session, "submit_sm_resp", pdu, message_id=message_id)
        if complete:
            payload, ids, ref, total, first_at = complete
            text = payload.decode("utf-16-be") if encoding == "UCS-2" else decode_gsm7(payload)
            received = ReceivedSms("+" + destination, sender, text, encoding, total, ids, ref, time.monotonic(),
                                   first_at)
            with self._lock:
                self.received.append(received)
                if self._record:
                    self._record.write(json.dumps({"to": received.to, "segments": total, "first_part_at": first_at,
                                                   "received_at": received.received_at,
                                                   "first_part_unix": time.time() - time.monotonic() + first_at})
                                       + "\n")
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
                    text = (f"id:{message_id} sub:001 dlvrd:{'001' if self.receipt_state == 'DELIVRD' else '000'}"
                            f" submit date:{stamp} done date:{stamp} stat:{self.receipt_state} err:000 text:")
                    fields = {"source_addr_ton": 1, "source_addr_npi": 1, "source_addr": destination,
                              "dest_addr_ton": 5, "destination_addr": "rewards", "esm_class": 0x04,
                              "short_message": text.encode()}
                    if self.receipt_tlv:
                        fields["receipted_message_id"] = message_id
                    pdu = smpp.make_pdu("deliver_sm", client=_SEQ, **fields)
                    with self._lock:
                        entry = queue.popleft()
                        session.unacked[pdu.sequence] = entry
                    try:
                        session.send(pdu)
                    except OSError:
                        break  # the session's end puts its unacknowledged receipts back
                    sent_any = True
            if not sent_any:
                time.sleep(0.005)


def run_forever(host: str, port: int, receipt_delay: float = 0.0, record: str | None = None) -> None:
    smsc = TestSmsc(host, port, receipt_delay=receipt_delay, record=record).start()
    log.info("smsc_listening", host=smsc.host, port=smsc.port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        smsc.stop()
