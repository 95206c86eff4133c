"""SMS providers behind one interface, chosen by SMS_PROVIDER: `file` (embedded default), `http`
(a JSON gateway with receipt callbacks) and `smpp` (SMPP 3.4 via smpplib).

Errors say what happened to the message, which is what retry decisions need:
TransientSmsError - the provider did not take it (throttled, unreachable): retry later;
PermanentSmsError - it never will (invalid number): do not retry;
InDoubtSmsError   - it may have been taken (connection lost after sending): never resend blindly."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import random
import re
import select
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import smpplib.client
import structlog
import tenacity
from smpplib import smpp

from service.delivery.text import DATA_CODING, split, udh
from service.kit.config import get_settings
from service.kit.observability.metrics import SMPP_BOUND
from service.sandbox.service import SMS_FAILED as SANDBOX_SMS_FAILED

log = structlog.get_logger("sms")


class SmsError(Exception):
    pass


class TransientSmsError(SmsError):
    pass


class PermanentSmsError(SmsError):
    pass


class InDoubtSmsError(SmsError):
    pass


@dataclass(frozen=True)
class OutgoingSms:
    reference: str  # "<redemption id>:<send>", our id of this SMS
    to: str  # E.164
    sender: str
    text: str
    encoding: str
    segments: int


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
            raise TransientSmsError(f"gateway unreachable: {type(exc).__name__}") from None
        except httpx.TimeoutException:
            raise InDoubtSmsError("gateway timed out after the request was sent") from None
        except httpx.HTTPError as exc:
            raise InDoubtSmsError(f"gateway connection broke: {type(exc).__name__}") from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise TransientSmsError(f"gateway answered {response.status_code}")
        if response.status_code >= 400:
            raise PermanentSmsError(f"gateway refused the message: {response.status_code}")
        try:
            return [str(response.json()["message_id"])]
        except (ValueError, KeyError, TypeError):
            raise InDoubtSmsError("gateway accepted the request but sent no message_id") from None


# --- SMPP 3.4 ----------------------------------------------------------------------------------

ESME_RX_T_APPN = 0x64  # temporary application error: the SMSC redelivers the receipt later
# Statuses of submit_sm_resp worth retrying: throttling, queue full, system/submit errors, timeouts.
TRANSIENT_SMPP_STATUSES = {0x58, 0x14, 0x08, 0x45, ESME_RX_T_APPN, 0x61}
RECEIPT_RE = re.compile(r"id:(?P<id>\S+).*?stat:(?P<stat>[A-Z]+)", re.S)


@dataclass
class _Pending:
    payloads: list[bytes]
    ids: list[str | None] = field(default_factory=list)
    error: SmsError | None = None
    taken: bool = False  # the session thread took it: from then on it may reach the SMSC
    abandoned: bool = False  # its submitter stopped waiting before the session thread took it
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.ids = [None] * len(self.payloads)


@dataclass(frozen=True)
class Receipt:
    message_id: str
    state: str  # DELIVRD, EXPIRED, UNDELIV, REJECTD, DELETED, ...
    destination: str | None


class SmppSession:
    """One bound transceiver per process, owned by one thread (smpplib sockets have no locking):
    actor threads hand it messages through a queue and wait. It keeps a window of submits in flight
    matched by sequence number, answers enquire_link, sends its own when idle, hands delivery
    receipts to `on_receipt`, and reconnects with backoff when the SMSC drops the connection."""

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        on_receipts: Callable[[list[Receipt]], list[Exception | None]],
        window: int = 64,
        enquire_every: float = 20.0,
        response_timeout: float = 10.0,
        receipt_batch: int = 200,
    ):
        self.host, self.port, self.system_id, self.password = host, port, system_id, password
        self.on_receipts = on_receipts
        self.receipt_batch = receipt_batch
        self.window = window
        self.enquire_every = enquire_every
        self.response_timeout = response_timeout
        self._requests: queue.Queue[tuple[OutgoingSms, _Pending]] = queue.Queue()
        self._take_lock = threading.Lock()
        self._receipts: queue.Queue[tuple[Receipt, int]] = queue.Queue()
        self._receipt_acks: queue.Queue[tuple[int, int]] = queue.Queue()
        self._inflight: dict[int, tuple[_Pending, int, float]] = {}
        self._client: smpplib.client.Client | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._reference = random.randrange(256)
        self._unknown_since: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="smpp-session", daemon=True)
        self._thread.start()
        self._receipt_thread = threading.Thread(target=self._receipt_loop, name="smpp-receipts", daemon=True)
        self._receipt_thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # called from actor threads
    def submit(self, sms: OutgoingSms, timeout: float = 15.0) -> list[str]:
        result = self.submit_many([sms], timeout)[0]
        if isinstance(result, SmsError):
            raise result
        return result

    def submit_many(self, messages: list[OutgoingSms], timeout: float = 15.0) -> list[list[str] | SmsError]:
        if not self._connected.wait(timeout=min(timeout, 5.0)):
            return [TransientSmsError("SMSC not connected") for _ in messages]
        pendings = [_Pending(split(sms.text, sms.encoding)) for sms in messages]
        for sms, pending in zip(messages, pendings, strict=True):
            self._requests.put((sms, pending))
        deadline = time.monotonic() + timeout
        results: list[list[str] | SmsError] = []
        for pending in pendings:
            if not pending.done.wait(max(0.0, deadline - time.monotonic())):
                with self._take_lock:
                    never_taken = not pending.taken
                    pending.abandoned = never_taken
                # Never taken: it cannot go out any more. Taken: it may still go out, and only a
                # receipt can tell.
                results.append(
                    TransientSmsError("the SMSC window did not take it in time")
                    if never_taken
                    else InDoubtSmsError("no answer from the SMSC in time")
                )
            else:
                results.append(pending.error or [i for i in pending.ids if i is not None])
        return results

    # the session thread
    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._connect()
                backoff = 0.2
                self._loop()
            except Exception as exc:  # noqa: BLE001 - any failure of the link: fail what is in flight, reconnect
                self._connected.clear()
                SMPP_BOUND.labels(f"{self.host}:{self.port}").set(0)
                self._fail_inflight(exc)
                self._disconnect()
                if self._stop.is_set():
                    break
                log.warning(
                    "smpp_link_down", error=f"{type(exc).__name__}: {exc}", retry_in_s=round(backoff, 2)
                )
                time.sleep(backoff + random.random() * backoff / 2)
                backoff = min(backoff * 2, 10.0)
        self._connected.clear()
        SMPP_BOUND.labels(f"{self.host}:{self.port}").set(0)
        self._disconnect()

    def _connect(self) -> None:
        client = smpplib.client.Client(self.host, self.port, timeout=5, allow_unknown_opt_params=True)
        client.connect()
        client.bind_transceiver(system_id=self.system_id, password=self.password)
        self._client = client
        self._connected.set()
        SMPP_BOUND.labels(f"{self.host}:{self.port}").set(1)
        log.info("smpp_bound", host=self.host, port=self.port)

    def _disconnect(self) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception:  # noqa: BLE001 - already broken
                pass
        self._client = None

    def _fail_inflight(self, exc: Exception) -> None:
        for pending, _part, _at in list(self._inflight.values()):
            if not pending.done.is_set():
                pending.error = InDoubtSmsError(f"SMSC link lost after submit: {type(exc).__name__}")
                pending.done.set()
        self._inflight.clear()

    def _bound(self) -> Any:
        """The session's smpplib client; only the session thread calls this, while bound."""
        if self._client is None:
            raise ConnectionError("not bound to the SMSC")
        return self._client

    def _loop(self) -> None:
        client = self._bound()
        last_heard = time.monotonic()
        while not self._stop.is_set():
            while True:  # answer receipts whose database work has finished
                try:
                    sequence, status = self._receipt_acks.get_nowait()
                except queue.Empty:
                    break
                ack = smpp.make_pdu("deliver_sm_resp", client=client, status=status)
                ack.sequence = sequence
                client.send_pdu(ack)
            while len(self._inflight) < self.window:
                try:
                    sms, pending = self._requests.get_nowait()
                except queue.Empty:
                    break
                with self._take_lock:
                    if pending.abandoned:
                        continue
                    pending.taken = True
                self._send(sms, pending)
            readable, _, _ = select.select([client._socket], [], [], 0.01)
            now = time.monotonic()
            if readable:
                self._dispatch(client.read_pdu())
                last_heard = now
            elif now - last_heard > self.enquire_every:
                client.send_pdu(smpp.make_pdu("enquire_link", client=client))
                last_heard = now
            for sequence, (_pending, _part, sent_at) in list(self._inflight.items()):
                if now - sent_at > self.response_timeout:
                    raise ConnectionError(f"no submit_sm_resp for sequence {sequence}")

    def _send(self, sms: OutgoingSms, pending: _Pending) -> None:
        payloads = pending.payloads
        self._reference = (self._reference + 1) % 256
        for index, payload in enumerate(payloads):
            multipart = len(payloads) > 1
            pdu = smpp.make_pdu(
                "submit_sm",
                client=self._bound(),
                source_addr_ton=5,
                source_addr_npi=0,
                source_addr=sms.sender,  # alphanumeric sender id
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr=sms.to.lstrip("+"),
                esm_class=0x40 if multipart else 0x00,
                data_coding=DATA_CODING[sms.encoding],
                registered_delivery=1,
                short_message=(udh(self._reference, len(payloads), index + 1) if multipart else b"")
                + payload,
            )
            self._bound().send_pdu(pdu)
            self._inflight[pdu.sequence] = (pending, index, time.monotonic())

    def _dispatch(self, pdu) -> None:
        command = pdu.command
        if command == "submit_sm_resp" or command == "generic_nack":
            entry = self._inflight.pop(pdu.sequence, None)
            if entry is None:
                return
            pending, part, _ = entry
            status = int(pdu.status or 0)
            if status == 0 and command == "submit_sm_resp":
                message_id = pdu.message_id
                pending.ids[part] = message_id.decode() if isinstance(message_id, bytes) else str(message_id)
                if all(i is not None for i in pending.ids):
                    pending.done.set()
            elif not pending.done.is_set():
                kind = (
                    TransientSmsError
                    if status in TRANSIENT_SMPP_STATUSES or command == "generic_nack"
                    else PermanentSmsError
                )
                pending.error = kind(f"SMSC refused the message: status 0x{status:02X}")
                pending.done.set()
        elif command == "deliver_sm":
            if int(pdu.esm_class or 0) & 0x04:
                self._receipts.put((self._parse_receipt(pdu), pdu.sequence))
            else:  # a mobile-originated message: nothing to do with it, but acknowledge it
                self._receipt_acks.put((pdu.sequence, 0))
        elif command == "enquire_link":
            resp = smpp.make_pdu("enquire_link_resp", client=self._bound())
            resp.sequence = pdu.sequence
            self._bound().send_pdu(resp)
        elif command == "unbind":
            resp = smpp.make_pdu("unbind_resp", client=self._bound())
            resp.sequence = pdu.sequence
            self._bound().send_pdu(resp)
            raise ConnectionError("SMSC unbound")

    @staticmethod
    def _parse_receipt(pdu) -> Receipt:
        raw = pdu.short_message or b""
        text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        match = RECEIPT_RE.search(text)
        tlv_id = getattr(pdu, "receipted_message_id", None)
        message_id = (tlv_id.decode() if isinstance(tlv_id, bytes) else tlv_id) or (
            match.group("id") if match else ""
        )
        state = match.group("stat") if match else "UNKNOWN"
        source = pdu.source_addr.decode() if isinstance(pdu.source_addr, bytes) else pdu.source_addr
        return Receipt(message_id=str(message_id).strip("\x00"), state=state, destination=source or None)

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
                errors = self.on_receipts([receipt for receipt, _ in batch])
            except Exception as exc:  # noqa: BLE001 - e.g. the database is away: every receipt comes again
                # One line for the batch: the SMSC offers every receipt again and again while the
                # database is away, and a line per receipt would bury the log.
                log.error("receipts_failed", receipts=len(batch), error=f"{type(exc).__name__}: {exc}")
                for _, sequence in batch:
                    self._receipt_acks.put((sequence, ESME_RX_T_APPN))
                continue
            for (receipt, sequence), error in zip(batch, errors, strict=True):
                self._receipt_acks.put((sequence, self._receipt_status(receipt, error)))

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


def build_provider(on_receipts: Callable[[list[Receipt]], list[Exception | None]]) -> Provider:
    """The provider SMS_PROVIDER names. `on_receipts` applies the delivery receipts an SMPP session
    receives (the delivery service's, handed in here so that providers know nothing of it)."""
    settings = get_settings()
    if settings.sms_provider == "http":
        if not settings.sms_http_url:
            raise RuntimeError("SMS_PROVIDER=http needs SMS_HTTP_URL")
        token = settings.sms_http_token.get_secret_value() if settings.sms_http_token else None
        return HttpProvider(settings.sms_http_url, token)
    if settings.sms_provider == "smpp":
        password = settings.smpp_password.get_secret_value() if settings.smpp_password else ""
        return SmppProvider(
            SmppSession(
                settings.smpp_host,
                settings.smpp_port,
                settings.smpp_system_id,
                password,
                on_receipts=on_receipts,
            )
        )
    return FileProvider(settings.sms_file or settings.data_dir / "sms.jsonl")
