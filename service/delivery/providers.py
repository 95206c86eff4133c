"""SMS providers behind one interface, chosen by SMS_PROVIDER: `file` (embedded default), `http`
(a JSON gateway with receipt callbacks) and `smpp` (SMPP 3.4 via smpplib).

Errors say what happened to the message, which is what retry decisions need (docs/delivery.md has
the table of SMPP statuses):
PermanentSmsError   - it never will be taken (invalid number): do not retry;
TransientSmsError   - the provider did not take it now (system error, 5xx): retry, a few times;
ThrottledSmsError   - the provider asks us to slow down (0x58, 0x14, 429): retry, more patiently;
UnavailableSmsError - it never reached the provider (no bound session, gateway unreachable): retry
                      until the deadline, since that is no fault of the message;
InDoubtSmsError     - it may have been taken (the link went away after sending): never resend blindly.
An error may carry the ids of the parts of a long SMS the provider did take (`part_ids`): those are
kept, and only the missing parts go again."""

from __future__ import annotations

import collections
import fcntl
import json
import os
import queue
import random
import re
import select
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import smpplib.client
import structlog
import tenacity
from smpplib import command_codes, smpp

from catalog.model import sender_address
from service.delivery.text import DATA_CODING, split, udh
from service.kit.config import get_settings
from service.kit.observability.metrics import SMPP_BOUND
from service.sandbox.service import SMS_FAILED as SANDBOX_SMS_FAILED

log = structlog.get_logger("sms")


class SmsError(Exception):
    """`code`: the provider's own word for it (an SMPP command_status as "0x58", "generic_nack", an
    HTTP status as "http 503"); `part_ids`: per part of the SMS, the provider's id of each part it did
    take (None for the others), or empty when it took none."""

    kind = "error"

    def __init__(self, message: str, *, code: str | None = None, part_ids: Sequence[str | None] = ()):
        super().__init__(message)
        self.code = code
        self.part_ids: tuple[str | None, ...] = tuple(part_ids)


class TransientSmsError(SmsError):
    kind = "transient"


class ThrottledSmsError(TransientSmsError):
    kind = "throttled"


class UnavailableSmsError(TransientSmsError):
    kind = "unavailable"


class PermanentSmsError(SmsError):
    kind = "permanent"


class InDoubtSmsError(SmsError):
    kind = "in_doubt"


ERROR_CLASSES: dict[str, type[SmsError]] = {
    "permanent": PermanentSmsError,
    "transient": TransientSmsError,
    "throttled": ThrottledSmsError,
}


@dataclass(frozen=True)
class OutgoingSms:
    reference: str  # "<redemption id>:<send>", our id of this SMS
    to: str  # E.164
    sender: str
    text: str
    encoding: str
    segments: int
    # A long SMS over SMPP: the UDH reference of its parts, the same in every attempt (None: the
    # session picks one), and per part the id an earlier attempt got for it (None: still to send).
    udh_reference: int | None = None
    part_ids: tuple[str | None, ...] = ()
    # The sender's type of number and numbering plan (None: from its form, catalog.model.sender_address)
    sender_ton: int | None = None
    sender_npi: int | None = None

    @property
    def parts_to_send(self) -> int:
        """The submit_sm PDUs this SMS still costs (what the operator counts and throttles)."""
        if len(self.part_ids) == self.segments:
            return sum(1 for i in self.part_ids if i is None)
        return self.segments


class Provider(Protocol):
    name: str

    def submit(self, sms: OutgoingSms) -> list[str]:
        """Hands the SMS to the provider; returns the provider's message id(s), one per part."""

    def submit_many(self, messages: list[OutgoingSms]) -> list[list[str] | SmsError]:
        """Hands several SMS to the provider at once; per message, its ids or what went wrong."""


def submit_each(provider: Provider, messages: list[OutgoingSms]) -> list[list[str] | SmsError]:
    results: list[list[str] | SmsError] = []
    for sms in messages:
        try:
            results.append(provider.submit(sms))
        except SmsError as exc:
            results.append(exc)
    return results


# --- file --------------------------------------------------------------------------------------


class FileProvider:
    """One JSON line per message (to, text, sender, encoding, segments): the embedded default."""

    name = "file"

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def submit(self, sms: OutgoingSms) -> list[str]:
        result = self.submit_many([sms])[0]
        if isinstance(result, SmsError):
            raise result
        return result

    def submit_many(self, messages: list[OutgoingSms]) -> list[list[str] | SmsError]:
        ids = [uuid.uuid4().hex for _ in messages]
        lines = "".join(
            json.dumps(
                {
                    "message_id": message_id,
                    "reference": sms.reference,
                    "to": sms.to,
                    "text": sms.text,
                    "sender": sms.sender,
                    "encoding": sms.encoding,
                    "segments": sms.segments,
                },
                ensure_ascii=False,
            )
            + "\n"
            for message_id, sms in zip(ids, messages, strict=True)
        )
        with self.path.open("a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # several worker processes append to one file
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        return [[message_id] for message_id in ids]


class SandboxProvider(FileProvider):
    """Sandbox keys' SMS: a file like the embedded default's, with the sandbox's magic number that
    the provider refuses (a permanent error, as for an unreachable number). Its receipts are applied
    by the delivery service (settle_sandbox_receipts)."""

    name = "sandbox"

    def submit_many(self, messages: list[OutgoingSms]) -> list[list[str] | SmsError]:
        refused = {i for i, sms in enumerate(messages) if sms.to == SANDBOX_SMS_FAILED}
        taken = iter(super().submit_many([sms for i, sms in enumerate(messages) if i not in refused]))
        return [
            PermanentSmsError("sandbox magic number: the provider refused it")
            if i in refused
            else next(taken)
            for i in range(len(messages))
        ]


# --- HTTP gateway ------------------------------------------------------------------------------


class HttpProvider:
    """POST {to, from, text, encoding, segments, reference} with a bearer token; the gateway answers
    {"message_id": ...} and later calls POST /v1/sms/receipts/http with the delivery state."""

    name = "http"

    def __init__(self, url: str, token: str | None, timeout: float = 10.0, concurrency: int = 8):
        self.url = url
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=3.0),
            limits=httpx.Limits(max_connections=concurrency * 2),
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sms-http")

    def submit_many(self, messages: list[OutgoingSms]) -> list[list[str] | SmsError]:
        if len(messages) == 1:
            return submit_each(self, messages)
        return [
            result
            for batch in self._pool.map(lambda sms: submit_each(self, [sms]), messages)
            for result in batch
        ]

    def submit(self, sms: OutgoingSms) -> list[str]:
        body = {
            "to": sms.to,
            "from": sms.sender,
            "text": sms.text,
            "encoding": sms.encoding,
            "segments": sms.segments,
            "reference": sms.reference,
        }
        # Connection hiccups inside one attempt are retried at once: a refused connection means the
        # request never left, so it cannot have been taken.
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(3),
            reraise=True,
            wait=tenacity.wait_exponential_jitter(initial=0.2, max=2),
            retry=tenacity.retry_if_exception_type(httpx.ConnectError),
        )
        try:
            response = retrying(
                self.client.post, self.url, json=body, headers={"Idempotency-Key": sms.reference}
            )
        except httpx.ConnectError as exc:
            raise UnavailableSmsError(f"gateway unreachable: {type(exc).__name__}") from None
        except httpx.TimeoutException:
            raise InDoubtSmsError("gateway timed out after the request was sent") from None
        except httpx.HTTPError as exc:
            raise InDoubtSmsError(f"gateway connection broke: {type(exc).__name__}") from None
        code = f"http {response.status_code}"
        if response.status_code == 429:
            raise ThrottledSmsError(f"gateway answered {response.status_code}", code=code)
        if response.status_code == 408 or response.status_code >= 500:
            raise TransientSmsError(f"gateway answered {response.status_code}", code=code)
        if response.status_code >= 400:
            raise PermanentSmsError(f"gateway refused the message: {response.status_code}", code=code)
        try:
            return [str(response.json()["message_id"])]
        except (ValueError, KeyError, TypeError):
            raise InDoubtSmsError("gateway accepted the request but sent no message_id") from None


# --- SMPP 3.4 ----------------------------------------------------------------------------------

ESME_ROK, ESME_RINVCMDLEN, ESME_RINVCMDID = 0x00, 0x02, 0x03
ESME_RX_T_APPN = 0x64  # temporary application error: the SMSC redelivers the receipt later
GENERIC_NACK = -1  # the key of a generic_nack in the tables of statuses

# What a refusal of a submit_sm means for the SMS; every other status is transient. docs/delivery.md
# has the table; SMPP_ERROR_CLASSES overrides it per status.
SMPP_STATUS_CLASSES: dict[int, str] = {
    0x14: "throttled",  # ESME_RMSGQFUL: message queue full
    0x58: "throttled",  # ESME_RTHROTTLED: throttling error
    0x04: "transient",  # ESME_RINVBNDSTS: not bound (yet)
    0x08: "transient",  # ESME_RSYSERR: system error
    0x45: "transient",  # ESME_RSUBMITFAIL: submit_sm failed
    0x64: "transient",  # ESME_RX_T_APPN: temporary application error
    0xFE: "transient",  # ESME_RDELIVERYFAILURE
    0xFF: "transient",  # ESME_RUNKNOWNERR
    GENERIC_NACK: "transient",  # the SMSC could not read the PDU; the next one may well go
    **{
        status: "permanent"
        for status in (
            0x01,  # ESME_RINVMSGLEN: message length invalid
            0x02,  # ESME_RINVCMDLEN: command length invalid
            0x03,  # ESME_RINVCMDID: invalid command id
            0x06,  # ESME_RINVPRTFLG: invalid priority flag
            0x07,  # ESME_RINVREGDLVFLG: invalid registered delivery flag
            0x0A,  # ESME_RINVSRCADR: invalid source address
            0x0B,  # ESME_RINVDSTADR: invalid destination address
            0x0C,  # ESME_RINVMSGID: invalid message id
            0x15,  # ESME_RINVSERTYP: invalid service type
            0x33,  # ESME_RINVNUMDESTS
            0x34,  # ESME_RINVDLNAME
            0x40,  # ESME_RINVDESTFLAG
            0x42,  # ESME_RINVSUBREP
            0x43,  # ESME_RINVESMCLASS: invalid esm_class
            0x44,  # ESME_RCNTSUBDL
            0x48,  # ESME_RINVSRCTON: invalid source TON
            0x49,  # ESME_RINVSRCNPI: invalid source NPI
            0x50,  # ESME_RINVDSTTON: invalid destination TON
            0x51,  # ESME_RINVDSTNPI: invalid destination NPI
            0x61,  # ESME_RINVSCHED: invalid scheduled delivery time
            0x62,  # ESME_RINVEXPIRY: invalid validity period
            0x63,  # ESME_RINVDFTMSGID: invalid predefined message
            0x65,  # ESME_RX_P_APPN: permanent application error
            0x66,  # ESME_RX_R_APPN: rejected by the application
            0xC0,  # ESME_RINVOPTPARSTREAM
            0xC1,  # ESME_ROPTPARNOTALLWD
            0xC2,  # ESME_RINVPARLEN
            0xC3,  # ESME_RMISSINGOPTPARAM
            0xC4,  # ESME_RINVOPTPARAMVAL
        )
    },
}
_RANK = {"throttled": 1, "transient": 2, "permanent": 3}


def error_class_overrides(configured: Mapping[str, str]) -> dict[int, str]:
    """SMPP_ERROR_CLASSES as the session reads it: {"0x45": "permanent", "generic_nack": ...}."""
    return {
        (GENERIC_NACK if key == "generic_nack" else int(key, 0)): value for key, value in configured.items()
    }


# message_state (SMPP 3.4 section 5.2.28), and the words vendors write for the states in receipt texts
MESSAGE_STATES = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
STATE_WORDS = {
    "DELIVERED": "DELIVRD",
    "UNDELIVERABLE": "UNDELIV",
    "UNDELIVERED": "UNDELIV",
    "REJECTED": "REJECTD",
    "ACCEPTED": "ACCEPTD",
}
RECEIPT_ID_RE = re.compile(rb"\bid:\s*([^\s]+)", re.I)
RECEIPT_STAT_RE = re.compile(rb"\bstat:\s*([A-Za-z_]+)", re.I)
COMMAND_NAMES = {code: name for name, code in command_codes.commands.items()}


@dataclass(frozen=True)
class Receipt:
    message_id: str
    state: str  # DELIVRD, EXPIRED, UNDELIV, REJECTD, DELETED, ...
    destination: str | None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return (value.decode("latin-1") if isinstance(value, bytes) else str(value)).strip("\x00").strip()


def is_receipt(pdu: Any) -> bool:
    """A deliver_sm or data_sm that reports on a message we sent (esm_class 0x04, or its TLVs)."""
    return bool(int(pdu.esm_class or 0) & 0x04) or bool(getattr(pdu, "receipted_message_id", None))


def parse_receipt(pdu: Any) -> Receipt:
    """The receipt a deliver_sm or data_sm carries: the receipted_message_id and message_state TLVs
    first, its text (short_message, or message_payload) as the fallback (`id:… stat:DELIVRD`, or a
    vendor's `stat:DELIVERED`)."""
    raw = getattr(pdu, "short_message", None) or getattr(pdu, "message_payload", None) or b""
    raw = raw if isinstance(raw, bytes) else str(raw).encode("latin-1", "replace")
    id_match, stat_match = RECEIPT_ID_RE.search(raw), RECEIPT_STAT_RE.search(raw)
    message_id = _text(getattr(pdu, "receipted_message_id", None)) or (
        _text(id_match.group(1)) if id_match else ""
    )
    tlv_state = getattr(pdu, "message_state", None)
    if tlv_state is not None:
        state = MESSAGE_STATES.get(int(tlv_state), "UNKNOWN")
    elif stat_match:
        word = stat_match.group(1).decode("latin-1").upper()
        state = STATE_WORDS.get(word, word)
    else:
        state = "UNKNOWN"
    return Receipt(message_id=message_id, state=state, destination=_text(pdu.source_addr) or None)


TODO, WRITTEN, ACCEPTED, REFUSED, LOST = "todo", "written", "accepted", "refused", "lost"


@dataclass(eq=False)
class _Pending:
    """One SMS in the session: its parts and what became of each in this attempt (parts taken in
    earlier attempts start out `accepted`)."""

    sms: OutgoingSms
    payloads: list[bytes]
    reference: int
    ids: list[str | None]
    state: list[str]
    refusal: SmsError | None = None  # the gravest refusal of a part
    lost: str = ""  # why parts are in doubt
    abandoned: bool = False  # its submitter stopped waiting: nothing more of it is written
    done: threading.Event = field(default_factory=threading.Event)

    def settled(self) -> bool:
        """Nothing of it is waiting for an answer, and nothing more of it will be written."""
        return WRITTEN not in self.state and (
            TODO not in self.state or self.refusal is not None or self.abandoned
        )

    def part_name(self, index: int) -> str:
        return "the message" if len(self.payloads) == 1 else f"part {index + 1} of {len(self.payloads)}"


class _Client(smpplib.client.Client):
    """smpplib's client, with TLS that checks the SMSC's name (smpplib wraps without one)."""

    def __init__(self, *args: Any, server_hostname: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._server_hostname = server_hostname

    def _create_socket(self) -> socket.socket:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(self.timeout)
        if self._ssl_context is None:
            return raw
        return self._ssl_context.wrap_socket(raw, server_hostname=self._server_hostname or self.host)


class _Unbound(Exception):
    """The SMSC unbound the session (answered)."""


class _Link:
    """One connection to the SMSC and its bind: the transceiver, or the transmitter or the receiver
    of a pair. Owned by the session thread."""

    def __init__(self, role: str):
        self.role = role
        self.client: Any = None
        self.generation = 0  # bumped by each bind: acknowledgements of an older bind are dropped
        self.buffer = bytearray()
        self.inflight: dict[int, tuple[_Pending, int, float]] = {}  # sequence -> (SMS, part, sent at)
        self.last_heard = 0.0
        self.enquiry: tuple[int, float] | None = None  # our enquire_link awaiting its answer
        self.unbind_sequence: int | None = None  # our unbind awaiting its unbind_resp
        self.retry_at = 0.0
        self.backoff = 0.2

    @property
    def transmits(self) -> bool:
        return self.role in ("transceiver", "transmitter")

    @property
    def bound(self) -> bool:
        return self.client is not None

    @property
    def sock(self) -> Any:
        return self.client._socket


class SmppSession:
    """The process's session with the SMSC: one bound transceiver, or a transmitter and a receiver,
    all owned by one thread (smpplib sockets have no locking): actor threads hand it SMS through a
    queue and wait. It writes the parts of long SMS under one UDH reference, keeps up to `window`
    submit_sm in flight matched by sequence number, hands receipts (deliver_sm or data_sm) to
    `on_receipts`, answers enquire_link, unbind and what it does not know (generic_nack), sends its
    own enquire_link when idle, unbinds before it closes or gives up on a silent link, and binds
    again with backoff when the link drops.

    A dropped link: parts never written (still queued, or behind the window, or whose write failed
    before the PDU was whole) cannot have reached the SMSC and go out on the new link at once; parts
    written and never answered may have been taken, so their SMS is reported in doubt."""

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        on_receipts: Callable[[list[Receipt]], list[Exception | None]],
        *,
        window: int = 64,
        enquire_every: float = 20.0,
        response_timeout: float = 10.0,
        receipt_batch: int = 200,
        system_type: str = "",
        bind: Literal["transceiver", "transmitter+receiver"] = "transceiver",
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        unbind_timeout: float = 2.0,
        connect_timeout: float = 5.0,
        dest_ton: int = 1,
        dest_npi: int = 1,
        error_classes: dict[int, str] | None = None,
    ):
        self.host, self.port, self.system_id, self.password = host, port, system_id, password
        self.system_type = system_type
        self.on_receipts = on_receipts
        self.receipt_batch = receipt_batch
        self.window = window
        self.enquire_every = enquire_every
        self.response_timeout = response_timeout
        self.unbind_timeout = unbind_timeout
        self.connect_timeout = connect_timeout
        self.ssl_context, self.server_hostname = ssl_context, server_hostname
        self.dest_ton, self.dest_npi = dest_ton, dest_npi
        self.error_classes = {**SMPP_STATUS_CLASSES, **(error_classes or {})}
        roles = ["transceiver"] if bind == "transceiver" else ["transmitter", "receiver"]
        self._links = [_Link(role) for role in roles]
        self._tx = self._links[0]
        self._label = f"{host}:{port}"
        self._lock = threading.Lock()  # the parts' states, shared with the submitters
        self._requests: queue.Queue[_Pending] = queue.Queue()
        self._active: collections.deque[_Pending] = collections.deque()  # SMS being written, in order
        self._receipts: queue.Queue[tuple[Receipt, _Link, int, int, str]] = queue.Queue()
        self._receipt_acks: queue.Queue[tuple[_Link, int, int, str, int]] = queue.Queue()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._reference = random.randrange(256)
        self._unknown_since: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="smpp-session", daemon=True)
        self._thread.start()
        self._receipt_thread = threading.Thread(target=self._receipt_loop, name="smpp-receipts", daemon=True)
        self._receipt_thread.start()

    def close(self) -> None:
        """Stops taking SMS, lets the answers to what is in flight arrive, unbinds (each wait bounded
        by `unbind_timeout`) and closes."""
        self._stop.set()
        self._thread.join(timeout=2 * self.unbind_timeout + self.connect_timeout + 5)

    # called from actor threads
    def submit(self, sms: OutgoingSms, timeout: float = 15.0) -> list[str]:
        result = self.submit_many([sms], timeout)[0]
        if isinstance(result, SmsError):
            raise result
        return result

    def submit_many(self, messages: list[OutgoingSms], timeout: float = 15.0) -> list[list[str] | SmsError]:
        if self._stop.is_set():
            return [UnavailableSmsError("the SMPP session is closing") for _ in messages]
        if not self._connected.wait(timeout=min(timeout, 5.0)):
            return [UnavailableSmsError("SMSC not bound") for _ in messages]
        pendings = [self._pending(sms) for sms in messages]
        for pending in pendings:
            if pending.settled():  # every part taken by earlier attempts
                pending.done.set()
            else:
                self._requests.put(pending)
        deadline = time.monotonic() + timeout
        results: list[list[str] | SmsError] = []
        for pending in pendings:
            pending.done.wait(max(0.0, deadline - time.monotonic()))
            with self._lock:
                pending.abandoned = True  # what the session has not written by now, it never will
                results.append(self._result(pending))
        return results

    def _pending(self, sms: OutgoingSms) -> _Pending:
        payloads = split(sms.text, sms.encoding)
        ids: list[str | None] = (
            list(sms.part_ids) if len(sms.part_ids) == len(payloads) else [None] * len(payloads)
        )
        if sms.udh_reference is not None:
            reference = sms.udh_reference & 0xFF
        else:
            with self._lock:
                self._reference = (self._reference + 1) % 256
                reference = self._reference
        state = [ACCEPTED if i is not None else TODO for i in ids]
        return _Pending(sms, payloads, reference, ids, state)

    @staticmethod
    def _result(p: _Pending) -> list[str] | SmsError:
        """What became of an SMS in this attempt (called under the lock)."""
        ids = tuple(p.ids)
        if all(s == ACCEPTED for s in p.state):
            return [i for i in p.ids if i is not None]
        refusal = p.refusal
        if isinstance(refusal, PermanentSmsError):
            return PermanentSmsError(str(refusal), code=refusal.code, part_ids=ids)
        if LOST in p.state or WRITTEN in p.state:
            return InDoubtSmsError(p.lost or "no answer from the SMSC in time", part_ids=ids)
        if refusal is not None:
            return type(refusal)(str(refusal), code=refusal.code, part_ids=ids)
        return UnavailableSmsError("the SMPP session did not send it in time", part_ids=ids)

    # the session thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave submitters waiting forever
            log.exception("smpp_session_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._shutdown()

    def _step(self) -> None:
        now = time.monotonic()
        for link in self._links:
            if not link.bound and now >= link.retry_at:
                self._connect(link)
        self._send_acks()
        if self._tx.bound:
            try:
                self._fill_window(self._tx)
            except (OSError, ConnectionError) as exc:
                self._drop(self._tx, f"{type(exc).__name__}: {exc}")
        bound = [link for link in self._links if link.bound]
        if not bound:
            self._stop.wait(0.01)
            return
        for link in self._readable(bound, 0.01):
            try:
                for raw in self._recv(link):
                    self._dispatch(link, raw)
            except _Unbound:
                self._drain(link)
                link.backoff = 0.05  # the SMSC asked: bind again right away
                self._drop(link, "the SMSC unbound the session")
            except (OSError, ConnectionError) as exc:
                self._drop(link, f"{type(exc).__name__}: {exc}")
        self._watch(time.monotonic())

    def _watch(self, now: float) -> None:
        """Gives up on a link that stopped answering; asks an idle one whether it is alive."""
        for link in [link for link in self._links if link.bound]:
            oldest = min((at for _, _, at in link.inflight.values()), default=None)
            silent = None
            if oldest is not None and now - oldest > self.response_timeout:
                silent = f"no submit_sm_resp within {self.response_timeout:g} s"
            elif link.enquiry is not None and now - link.enquiry[1] > self.response_timeout:
                silent = f"no enquire_link_resp within {self.response_timeout:g} s"
            if silent:
                self._unbind(link)
                self._drop(link, silent)
            elif link.enquiry is None and now - link.last_heard > self.enquire_every:
                try:
                    pdu = smpp.make_pdu("enquire_link", client=link.client)
                    self._write(link, pdu)
                    link.enquiry = (pdu.sequence, now)
                except (OSError, ConnectionError) as exc:
                    self._drop(link, f"{type(exc).__name__}: {exc}")

    def _readable(self, links: list[_Link], timeout: float) -> list[_Link]:
        ready = [link for link in links if isinstance(link.sock, ssl.SSLSocket) and link.sock.pending()]
        if ready:
            return ready
        by_socket = {link.sock: link for link in links}
        readable, _, _ = select.select(list(by_socket), [], [], timeout)
        return [by_socket[s] for s in readable]

    def _recv(self, link: _Link) -> list[bytes]:
        """The whole PDUs that have arrived on the link (one read)."""
        try:
            data = link.sock.recv(65536)
        except ssl.SSLWantReadError:
            return []
        if not data:
            raise ConnectionError("the SMSC closed the connection")
        link.buffer += data
        pdus = []
        while len(link.buffer) >= 4:
            (length,) = struct.unpack_from(">L", link.buffer)
            if length < 16 or length > 1 << 20:
                raise ConnectionError(f"unreadable PDU stream (command_length {length})")
            if len(link.buffer) < length:
                break
            pdus.append(bytes(link.buffer[:length]))
            del link.buffer[:length]
        return pdus

    def _write(self, link: _Link, pdu: Any) -> None:
        try:
            link.sock.sendall(pdu.generate())
        except OSError as exc:
            raise ConnectionError(f"write failed: {type(exc).__name__}") from exc

    def _answer(self, link: _Link, command: str, sequence: int, status: int = ESME_ROK) -> None:
        pdu = smpp.make_pdu(command, client=link.client, status=status)
        pdu.sequence = sequence
        self._write(link, pdu)

    def _connect(self, link: _Link) -> None:
        client = _Client(
            self.host,
            self.port,
            timeout=self.connect_timeout,
            logger_name="smpp.client",  # one logger, not one per connection (smpplib's default)
            allow_unknown_opt_params=True,
            ssl_context=self.ssl_context,
            server_hostname=self.server_hostname,
        )
        try:
            client.connect()
            link.client = client
            pdu = smpp.make_pdu(
                f"bind_{link.role}",
                client=client,
                system_id=self.system_id,
                password=self.password,
                system_type=self.system_type,
            )
            self._write(link, pdu)
            deadline = time.monotonic() + self.connect_timeout
            resp = None
            while resp is None:
                if time.monotonic() > deadline:
                    raise ConnectionError("no bind response")
                for raw in self._recv(link):
                    if COMMAND_NAMES.get(struct.unpack_from(">L", raw, 4)[0]) in (
                        f"bind_{link.role}_resp",
                        "generic_nack",
                    ):
                        resp = struct.unpack_from(">L", raw, 8)[0]
                    else:
                        self._dispatch(link, raw)
            if resp != ESME_ROK:
                raise ConnectionError(f"bind refused: status 0x{resp:02X}")
        except Exception as exc:  # noqa: BLE001 - any failure to bind: try again later
            link.client = None
            link.buffer.clear()
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001 - already broken
                pass
            link.retry_at = time.monotonic() + link.backoff * (1 + random.random() / 2)
            log.warning(
                "smpp_bind_failed",
                role=link.role,
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=round(link.backoff, 2),
            )
            link.backoff = min(link.backoff * 2, 10.0)
            return
        link.generation += 1
        link.last_heard = time.monotonic()
        link.backoff = 0.2
        if link.transmits:
            self._connected.set()
            SMPP_BOUND.labels(self._label).set(1)
        log.info(
            "smpp_bound", host=self.host, port=self.port, role=link.role, tls=self.ssl_context is not None
        )

    def _drop(self, link: _Link, reason: str) -> None:
        """Closes the link. Parts written on it and never answered are in doubt; their SMS's parts
        still to write stay queued for the next bind."""
        if link.client is not None:
            try:
                link.client.disconnect()
            except Exception:  # noqa: BLE001 - already broken
                pass
        link.client = None
        link.buffer.clear()
        link.enquiry = link.unbind_sequence = None
        with self._lock:
            for pending, part, _ in link.inflight.values():
                pending.state[part] = LOST
                pending.lost = f"SMSC link lost after submit: {reason}"
                if pending.settled():
                    pending.done.set()
        in_doubt = len(link.inflight)
        link.inflight.clear()
        if link.transmits:
            self._connected.clear()
            SMPP_BOUND.labels(self._label).set(0)
        if self._stop.is_set():
            return
        link.retry_at = time.monotonic() + link.backoff * (1 + random.random() / 2)
        log.warning(
            "smpp_link_down",
            role=link.role,
            error=reason,
            parts_in_doubt=in_doubt,
            sms_waiting=len(self._active) + self._requests.qsize(),
            retry_in_s=round(link.backoff, 2),
        )
        link.backoff = min(link.backoff * 2, 10.0)

    def _unbind(self, link: _Link) -> None:
        """Sends unbind and waits for unbind_resp, `unbind_timeout` at most, still taking the answers
        to submits in flight meanwhile."""
        if not link.bound:
            return
        try:
            pdu = smpp.make_pdu("unbind", client=link.client)
            link.unbind_sequence = pdu.sequence
            self._write(link, pdu)
            deadline = time.monotonic() + self.unbind_timeout
            while link.unbind_sequence is not None and (left := deadline - time.monotonic()) > 0:
                for ready in self._readable([link], min(left, 0.05)):
                    for raw in self._recv(ready):
                        self._dispatch(ready, raw)
        except (OSError, ConnectionError, _Unbound):
            pass

    def _drain(self, link: _Link) -> None:
        """After the SMSC's unbind (answered): nothing more is written on the link, and the answers
        to the submits in flight are read until the SMSC closes it (`unbind_timeout` at most), so
        that only those it never answered are in doubt."""
        deadline = time.monotonic() + self.unbind_timeout
        try:
            while link.inflight and (left := deadline - time.monotonic()) > 0:
                for ready in self._readable([link], min(left, 0.05)):
                    for raw in self._recv(ready):
                        self._dispatch(ready, raw)
        except (OSError, ConnectionError, _Unbound):
            pass

    def _shutdown(self) -> None:
        with self._lock:  # nothing more goes out: what was never written was never sent
            waiting = list(self._active)
            while True:
                try:
                    waiting.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            for pending in waiting:
                pending.abandoned = True
                if pending.settled():
                    pending.done.set()
        self._active.clear()
        deadline = time.monotonic() + self.unbind_timeout
        while (left := deadline - time.monotonic()) > 0 and any(
            link.inflight for link in self._links if link.bound
        ):
            bound = [link for link in self._links if link.bound]
            for link in self._readable(bound, min(left, 0.05)):
                try:
                    for raw in self._recv(link):
                        self._dispatch(link, raw)
                except (OSError, ConnectionError, _Unbound) as exc:
                    self._drop(link, f"{type(exc).__name__}: {exc}")
        for link in self._links:
            self._unbind(link)
            self._drop(link, "session closed")
        self._connected.clear()

    def _fill_window(self, link: _Link) -> None:
        while len(link.inflight) < self.window:
            taken = self._next_part()
            if taken is None:
                return
            self._write_part(link, *taken)

    def _next_part(self) -> tuple[_Pending, int] | None:
        """The next part to write, marked written (under the lock: from then on it may reach the
        SMSC, and a submitter that gives up counts it in doubt)."""
        while True:
            if not self._active:
                try:
                    self._active.append(self._requests.get_nowait())
                except queue.Empty:
                    return None
            pending = self._active[0]
            with self._lock:
                if pending.abandoned or pending.refusal is not None or TODO not in pending.state:
                    self._active.popleft()
                    if pending.settled():
                        pending.done.set()
                    continue
                index = pending.state.index(TODO)
                pending.state[index] = WRITTEN
                return pending, index

    def _write_part(self, link: _Link, pending: _Pending, index: int) -> None:
        sms, total = pending.sms, len(pending.payloads)
        ton, npi = sender_address(sms.sender, sms.sender_ton, sms.sender_npi)
        pdu = smpp.make_pdu(
            "submit_sm",
            client=link.client,
            source_addr_ton=ton,
            source_addr_npi=npi,
            source_addr=sms.sender,
            dest_addr_ton=self.dest_ton,
            dest_addr_npi=self.dest_npi,
            destination_addr=sms.to.lstrip("+"),
            esm_class=0x40 if total > 1 else 0x00,
            data_coding=DATA_CODING[sms.encoding],
            registered_delivery=1,
            short_message=(udh(pending.reference, total, index + 1) if total > 1 else b"")
            + pending.payloads[index],
        )
        link.inflight[pdu.sequence] = (pending, index, time.monotonic())
        try:
            self._write(link, pdu)
        except ConnectionError:
            # The PDU did not leave whole, so the SMSC cannot have taken it: write it again after the
            # next bind.
            del link.inflight[pdu.sequence]
            with self._lock:
                pending.state[index] = TODO
            raise

    def _dispatch(self, link: _Link, raw: bytes) -> None:
        link.last_heard = time.monotonic()
        _, command_id, status, sequence = struct.unpack_from(">LLLL", raw)
        name = COMMAND_NAMES.get(command_id)
        if name is None:
            log.warning("smpp_unknown_command", command_id=f"0x{command_id:08X}")
            if not command_id & 0x80000000:  # a request: answer it, and keep the session
                self._answer(link, "generic_nack", sequence, ESME_RINVCMDID)
            return
        try:
            pdu = smpp.parse_pdu(raw, client=link.client, allow_unknown_opt_params=True)
        except Exception as exc:  # noqa: BLE001 - a PDU we cannot read: say so, keep the session
            log.warning("smpp_unreadable_pdu", command=name, error=f"{type(exc).__name__}: {exc}")
            if not command_id & 0x80000000:
                self._answer(link, "generic_nack", sequence, ESME_RINVCMDLEN)
            return
        if name in ("submit_sm_resp", "generic_nack"):
            self._answered(link, name, status, sequence, pdu)
        elif name in ("deliver_sm", "data_sm"):
            resp = f"{name}_resp"
            if is_receipt(pdu):
                self._receipts.put((parse_receipt(pdu), link, link.generation, sequence, resp))
            else:  # a mobile-originated message: nothing to do with it, but acknowledge it
                self._answer(link, resp, sequence)
        elif name == "enquire_link":
            self._answer(link, "enquire_link_resp", sequence)
        elif name == "enquire_link_resp":
            link.enquiry = None
        elif name == "unbind":
            self._answer(link, "unbind_resp", sequence)
            raise _Unbound
        elif name == "unbind_resp":
            if link.unbind_sequence == sequence:
                link.unbind_sequence = None
        elif name == "alert_notification" or command_id & 0x80000000:
            pass  # no answer is due; a late response to something we gave up on
        else:  # a request an ESME does not serve (submit_sm, bind, query_sm, ...)
            self._answer(link, "generic_nack", sequence, ESME_RINVCMDID)

    def _answered(self, link: _Link, name: str, status: int, sequence: int, pdu: Any) -> None:
        entry = link.inflight.pop(sequence, None)
        if entry is None:
            if name == "generic_nack":  # our enquire_link or unbind could not be read: not a link fault
                if link.enquiry and link.enquiry[0] == sequence:
                    link.enquiry = None
                if link.unbind_sequence == sequence:
                    link.unbind_sequence = None
            return
        pending, part, _ = entry
        with self._lock:
            if name == "submit_sm_resp" and status == ESME_ROK:
                pending.ids[part] = _text(pdu.message_id)
                pending.state[part] = ACCEPTED
            else:
                pending.state[part] = REFUSED
                if name == "generic_nack":
                    kind = self.error_classes.get(GENERIC_NACK, "transient")
                    reason, code = f"SMSC answered generic_nack (0x{status:02X})", "generic_nack"
                else:
                    kind = self.error_classes.get(status, "transient")
                    reason, code = f"status 0x{status:02X}", f"0x{status:02X}"
                gravest = pending.refusal.kind if pending.refusal else None
                if gravest is None or _RANK[kind] > _RANK[gravest]:
                    pending.refusal = ERROR_CLASSES[kind](
                        f"SMSC refused {pending.part_name(part)}: {reason}", code=code
                    )
            if pending.settled():
                pending.done.set()

    def _send_acks(self) -> None:
        """Answers the receipts whose database work has finished, on the bind they came on."""
        while True:
            try:
                link, generation, sequence, resp, status = self._receipt_acks.get_nowait()
            except queue.Empty:
                return
            if link.bound and link.generation == generation:  # else the SMSC offers it again anyway
                try:
                    self._answer(link, resp, sequence, status)
                except (OSError, ConnectionError) as exc:
                    self._drop(link, f"{type(exc).__name__}: {exc}")

    UNKNOWN_RECEIPT_PATIENCE = 30.0

    def _receipt_loop(self) -> None:
        """Applies receipts in batches (one database transaction for the usual case) and hands the
        session thread the status to acknowledge each one with."""
        while not self._stop.is_set():
            try:
                batch = [self._receipts.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < self.receipt_batch:
                try:
                    batch.append(self._receipts.get_nowait())
                except queue.Empty:
                    break
            try:
                errors = self.on_receipts([receipt for receipt, *_ in batch])
            except Exception as exc:  # noqa: BLE001 - e.g. the database is away: every receipt comes again
                # One line for the batch: the SMSC offers every receipt again and again while the
                # database is away, and a line per receipt would bury the log.
                log.error("receipts_failed", receipts=len(batch), error=f"{type(exc).__name__}: {exc}")
                for _, link, generation, sequence, resp in batch:
                    self._receipt_acks.put((link, generation, sequence, resp, ESME_RX_T_APPN))
                continue
            for (receipt, link, generation, sequence, resp), error in zip(batch, errors, strict=True):
                self._receipt_acks.put(
                    (link, generation, sequence, resp, self._receipt_status(receipt, error))
                )

    def _receipt_status(self, receipt: Receipt, error: Exception | None) -> int:
        if error is None:
            self._unknown_since.pop(receipt.message_id, None)
            return 0
        if type(error).__name__ == "ReceiptTooEarly":
            first = self._unknown_since.setdefault(receipt.message_id, time.monotonic())
            if time.monotonic() - first > self.UNKNOWN_RECEIPT_PATIENCE:
                log.warning("receipt_for_unknown_message", message_id=receipt.message_id, state=receipt.state)
                self._unknown_since.pop(receipt.message_id, None)
                return 0  # not ours, or long settled: stop the SMSC from offering it forever
        else:
            log.error("receipt_failed", error=f"{type(error).__name__}: {error}")
        return ESME_RX_T_APPN


class SmppProvider:
    name = "smpp"

    def __init__(self, session: SmppSession):
        self.session = session

    def submit(self, sms: OutgoingSms) -> list[str]:
        return self.session.submit(sms)

    def submit_many(self, messages: list[OutgoingSms]) -> list[list[str] | SmsError]:
        return self.session.submit_many(messages)

    def close(self) -> None:
        self.session.close()


def smpp_ssl_context() -> ssl.SSLContext | None:
    """SMPP_TLS: the SMSC's certificate checked against SMPP_TLS_CA_FILE (else the system's CAs) and
    its name (SMPP_TLS_SERVER_NAME, else SMPP_HOST), unless SMPP_TLS_VERIFY=false; a client
    certificate when SMPP_TLS_CERT_FILE is set."""
    settings = get_settings()
    if not settings.smpp_tls:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.smpp_tls_ca_file) if settings.smpp_tls_ca_file else None
    )
    if not settings.smpp_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.smpp_tls_cert_file:
        context.load_cert_chain(
            str(settings.smpp_tls_cert_file),
            str(settings.smpp_tls_key_file) if settings.smpp_tls_key_file else None,
        )
    return context


class Pace(Protocol):
    """Asks the provider's rate limit for up to `wanted` submit_sm PDUs of the current second; grants
    them (at most `wanted`), or 0 when fewer than `at_least` are left (at_least is capped by the limit
    itself, so an SMS with more parts than a second's budget still goes, over more than one second)."""

    def __call__(self, wanted: int, at_least: int = 1) -> int: ...


def has_bulk_account() -> bool:
    """Whether campaigns' SMS have an account of their own (SMPP_BULK_SYSTEM_ID or SMS_HTTP_BULK_TOKEN)."""
    settings = get_settings()
    if settings.sms_provider == "smpp":
        return bool(settings.smpp_bulk_system_id)
    token = settings.sms_http_bulk_token
    # an empty SMS_HTTP_BULK_TOKEN (a compose file's `${SMS_HTTP_BULK_TOKEN:-}`) is no bulk account
    return settings.sms_provider == "http" and bool(token and token.get_secret_value())


def build_provider(
    on_receipts: Callable[[list[Receipt]], list[Exception | None]], *, bulk: bool = False
) -> Provider:
    """The provider SMS_PROVIDER names. `on_receipts` applies the delivery receipts an SMPP session
    receives (the delivery service's, handed in here so that providers know nothing of it). `bulk`:
    the campaigns' account when there is one (a second bind, another HTTP key), else the same one."""
    settings = get_settings()
    bulk = bulk and has_bulk_account()
    if settings.sms_provider == "http":
        if not settings.sms_http_url:
            raise RuntimeError("SMS_PROVIDER=http needs SMS_HTTP_URL")
        secret = settings.sms_http_bulk_token if bulk else settings.sms_http_token
        token = secret.get_secret_value() if secret else None
        return HttpProvider(settings.sms_http_url, token)
    if settings.sms_provider == "smpp":
        secret = settings.smpp_bulk_password if bulk else settings.smpp_password
        password = secret.get_secret_value() if secret else ""
        return SmppProvider(
            SmppSession(
                settings.smpp_host,
                settings.smpp_port,
                (settings.smpp_bulk_system_id or "") if bulk else settings.smpp_system_id,
                password,
                on_receipts=on_receipts,
                window=settings.smpp_window,
                enquire_every=settings.smpp_enquire_link_seconds,
                response_timeout=settings.smpp_response_timeout_seconds,
                system_type=settings.smpp_system_type,
                bind=settings.smpp_bind,
                ssl_context=smpp_ssl_context(),
                server_hostname=settings.smpp_tls_server_name,
                unbind_timeout=settings.smpp_unbind_timeout_seconds,
                error_classes=error_class_overrides(settings.smpp_error_classes),
            )
        )
    return FileProvider(settings.sms_file or settings.data_dir / "sms.jsonl")
