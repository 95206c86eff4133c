"""Webhooks to a program's endpoint: redemption status changes, card exchanges and expiries, low
stock and budget, closed periods (service/events/schemas.py names them all).

Body: {"id", "type", "created_at", "data": {...}}, signed by the Standard Webhooks scheme
(https://www.standardwebhooks.com): `webhook-id` (the event id, the same on every retry and replay),
`webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 over
"<id>.<timestamp>.<body>">`, one signature per secret the program has in force (two during a secret
rotation's overlap, space separated), so integrators verify with the scheme's ready-made libraries.

For integrators of earlier releases the legacy headers Rewards-Event-Id, Rewards-Timestamp and
Rewards-Signature (`v1=<hex HMAC over "<timestamp>.<body>">`) still go along while
WEBHOOK_LEGACY_HEADERS is on (docs/delivery.md says until when and why). At least once: consumers
dedupe by id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit

import structlog
from psycopg import Connection
from psycopg.rows import class_row, scalar_row

from service.kit.config import get_settings
from service.kit.db import sqlfiles
from service.kit.db.engine import batch, driver, transaction
from service.kit.messaging import jobs, outbox
from service.kit.observability.metrics import WEBHOOK_DELIVERIES
from service.kit.security.crypto import Keyring, derive, get_keyring
from service.kit.values.ids import uuid7

log = structlog.get_logger("webhooks")
GIVE_UP_AFTER = timedelta(hours=24)
SECRET_CONTEXT = b"webhook-secret"
SECRET_PREFIX = "whsec_"
SECRETS_TTL = 30.0  # seconds a worker signs with the secrets it read before it looks again

_SQL = sqlfiles.load("service.events")
FIRST_SECRET = _SQL["first_secret"]
SECRETS_IN_FORCE = _SQL["secrets_in_force"]
EXPIRE_SECRETS = _SQL["expire_secrets"]
NEW_SECRET = _SQL["new_secret"]
INSERT_EVENTS = _SQL["insert_events"]
EVENTS_TO_ATTEMPT = _SQL["events_to_attempt"]
INSERT_ATTEMPTS = _SQL["insert_attempts"]
FINISHED_EVENTS = _SQL["finished_events"]


# --- secrets ---------------------------------------------------------------------------------------


def format_secret(secret: bytes) -> str:
    """A secret as Standard Webhooks libraries take it: `whsec_` and its base64."""
    return SECRET_PREFIX + base64.b64encode(secret).decode()


def legacy_secret(keyring: Keyring, program_code: str) -> bytes:
    """What earlier releases derived from ENCRYPTION_KEY instead of storing a secret; a program's
    first stored secret is this one, so integrators keep theirs across the upgrade."""
    return derive(keyring.oldest, b"webhook/" + program_code.encode())


@dataclass(frozen=True)
class StoredSecret:
    """A row of secrets_in_force.sql: a secret encrypted at rest, and the key it is under."""

    secret_enc: bytes
    key_id: str | None


def secrets_in_force(db: Connection[Any], program_id: int, program_code: str, now: datetime) -> list[bytes]:
    """The program's secrets in force, newest (current) first: those without an end, or whose overlap
    window after a rotation is still open. The first call for a program stores its first secret."""
    keyring = get_keyring()
    rows = _secret_rows(db, program_id, now)
    if not rows:
        db.execute("SELECT pg_advisory_xact_lock(7270018, %(program_id)s)", {"program_id": program_id})
        db.execute(
            FIRST_SECRET,
            {
                "program_id": program_id,
                "secret_enc": keyring.encrypt(legacy_secret(keyring, program_code), SECRET_CONTEXT),
                "key_id": keyring.current,
                "now": now,
            },
        )
        rows = _secret_rows(db, program_id, now)
    return [keyring.decrypt(bytes(row.secret_enc), SECRET_CONTEXT, row.key_id) for row in rows]


def _secret_rows(db: Connection[Any], program_id: int, now: datetime) -> list[StoredSecret]:
    return (
        db.cursor(row_factory=class_row(StoredSecret))
        .execute(SECRETS_IN_FORCE, {"program_id": program_id, "now": now})
        .fetchall()
    )


def _program(db: Connection[Any], program_code: str) -> int:
    program_id: int | None = (
        db.cursor(row_factory=scalar_row)
        .execute("SELECT id FROM programs WHERE code = %(code)s", {"code": program_code})
        .fetchone()
    )
    if program_id is None:
        raise LookupError(f"no program {program_code}")
    return program_id


def program_secret(program_code: str) -> bytes:
    """The program's current secret (for `rewards webhooks secret`)."""
    with transaction() as session:
        db = driver(session)
        return secrets_in_force(db, _program(db, program_code), program_code, datetime.now(UTC))[0]


def rotate_secret(program_code: str, *, overlap: timedelta, now: datetime | None = None) -> bytes:
    """A new random secret becomes current; the ones in force stay valid for `overlap`, during which
    every event is signed by both, so the integrator can switch at any moment inside it."""
    now = now or datetime.now(UTC)
    keyring = get_keyring()
    with transaction() as session:
        db = driver(session)
        program_id = _program(db, program_code)
        secrets_in_force(db, program_id, program_code, now)  # the first one, if it was never stored
        db.execute(EXPIRE_SECRETS, {"program_id": program_id, "until": now + overlap})
        secret = os.urandom(32)
        db.execute(
            NEW_SECRET,
            {
                "program_id": program_id,
                "secret_enc": keyring.encrypt(secret, SECRET_CONTEXT),
                "key_id": keyring.current,
                "now": now,
            },
        )
    _secrets_cache.clear()
    log.info("webhook_secret_rotated", program=program_code, overlap_hours=overlap.total_seconds() / 3600)
    return secret


_secrets_cache: dict[int, tuple[float, list[bytes]]] = {}


def _cached_secrets(db: Connection[Any], program_id: int, program_code: str, now: datetime) -> list[bytes]:
    hit = _secrets_cache.get(program_id)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    secrets = secrets_in_force(db, program_id, program_code, now)
    _secrets_cache[program_id] = (time.monotonic() + SECRETS_TTL, secrets)
    return secrets


# --- signatures ------------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The legacy Rewards-Signature."""
    return "v1=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def standard_signature(secrets: list[bytes], event_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: `v1,<base64>` per secret, space separated."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(s, signed, hashlib.sha256).digest()).decode() for s in secrets
    )


def signed_headers(secrets: list[bytes], event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secrets, event_id, timestamp, body),
    }
    if get_settings().webhook_legacy_headers:
        # One signature only (the format has no room for two): by the oldest secret in force, which is
        # the one a legacy integrator holds until the overlap of a rotation ends.
        headers["Rewards-Event-Id"] = event_id
        headers["Rewards-Timestamp"] = str(timestamp)
        headers["Rewards-Signature"] = sign(secrets[-1], timestamp, body)
    return headers


# --- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    program_id: int
    webhook_url: str | None
    redemption_id: uuid.UUID | None
    event: str  # a redemption status (sent, delivered, failed, cancelled) or a full type (stock.low)
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return self.event if "." in self.event else f"redemption.{self.event}"

    @property
    def sandbox(self) -> bool:
        """An event of the sandbox world: its data says so (`"sandbox": true`, as every event about a
        sandbox redemption or card does). Kept apart from the real events in the event log."""
        return self.data.get("sandbox") is True


def emit(
    db: Connection[Any],
    *,
    program_id: int,
    webhook_url: str | None,
    redemption_id: uuid.UUID | None,
    event: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """Writes the event and its outbox row; call inside the transaction that changes the status."""
    emit_many(db, [Event(program_id, webhook_url, redemption_id, event, data)], now=now)


def emit_many(db: Connection[Any], events: list[Event], *, now: datetime) -> None:
    rows: list[dict[str, Any]] = []
    for e in events:
        if not e.webhook_url:
            continue
        event_id = uuid7()  # time-ordered: webhook_events and its index grow at their right end
        payload = {
            "id": str(event_id),
            "type": e.type,
            "created_at": now.isoformat(),
            "data": e.data,
        }
        rows.append(
            {
                "id": event_id,
                "program_id": e.program_id,
                "redemption_id": e.redemption_id,
                "sandbox": e.sandbox,
                "type": payload["type"],
                "payload": payload,
                "message_id": uuid7(),
                "n": len(rows),
            }
        )
    if not rows:
        return
    # Two statements whatever the number of events, each reading one JSON document.
    events_json = batch(rows)
    db.execute(INSERT_EVENTS, {"now": now, "events": events_json})
    db.execute(
        outbox.insert(
            jobs.WEBHOOK,
            payload="jsonb_build_object('event_id', id)",
            message_id="message_id",
            source="jsonb_to_recordset(%(events)s::jsonb) AS e(message_id uuid, id uuid, n int)",
            order_by="n",
        ),
        {"outbox_now": now, "events": events_json, **outbox.trace_params()},
    )


class _Connections(threading.local):
    """Keep-alive connections to receivers, one per endpoint in each posting thread.

    http.client rather than an HTTP client library: at a thousand events a second its cost per
    request (about 140 µs of CPU against 400 for urllib3 and 600 for httpx, measured on loopback)
    is worth having, and a webhook needs nothing more: no redirects (a 3xx is a failed delivery),
    no retries (ours have backoff), no cookies."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.netloc)
        if key in self.open:
            try:
                return self._exchange(key, target, body, headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The receiver closed the kept-alive connection in the meantime. Once more on a new
                # one: the request most likely never arrived, and a second copy is harmless (at least
                # once: receivers dedupe by event id).
                pass
        self.open[key] = self._connect(parts)
        return self._exchange(key, target, body, headers)

    def _exchange(self, key: tuple[str, str], target: str, body: bytes, headers: dict[str, str]) -> int:
        conn = self.open[key]
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        except BaseException:
            del self.open[key]
            conn.close()
            raise

    @staticmethod
    def _connect(parts: SplitResult) -> http.client.HTTPConnection:
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {parts.scheme}")
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        if not parts.hostname:
            raise ValueError("the URL names no host")
        conn = kind(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT)
        conn.connect()
        conn.sock.settimeout(READ_TIMEOUT)
        return conn


CONNECT_TIMEOUT, READ_TIMEOUT = 3.0, 10.0
POSTING_THREADS = 8
_connections = _Connections()
_pool = ThreadPoolExecutor(max_workers=POSTING_THREADS, thread_name_prefix="webhook-post")


# The backoff after a failed attempt: 5 s doubling with each attempt up to an hour, jittered (50-100 %).
FIRST_RETRY_SECONDS, LONGEST_RETRY_SECONDS = 5.0, 3600.0


def retry_delay(attempt: int) -> float:
    """Seconds from the `attempt`-th failed attempt (of the current 24-hour window) to the next."""
    ceiling = min(FIRST_RETRY_SECONDS * 2 ** max(attempt - 1, 0), LONGEST_RETRY_SECONDS)
    return ceiling * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class Attempted:
    """What became of one event: "delivered", "done" (nothing to do), "given_up" or
    "retry: <what the receiver did>", with when its next attempt is due."""

    result: str
    next_attempt_in_ms: int | None = None


def deliver_events(event_ids: list[uuid.UUID], *, now: datetime | None = None) -> dict[uuid.UUID, str]:
    """Several events at once: one read, the POSTs side by side, one write. Per event: "delivered",
    "done" (nothing to do), "given_up" or "retry: <what the receiver did>"."""
    return {event_id: a.result for event_id, a in attempt_events(event_ids, now=now).items()}


@dataclass(frozen=True)
class _Due:
    """A row of events_to_attempt.sql."""

    id: uuid.UUID
    payload: dict[str, Any]
    window_from: datetime  # the start of its 24-hour window of retries
    delivered_at: datetime | None
    given_up_at: datetime | None
    webhook_url: str | None
    program_code: str
    program_id: int
    attempts: int  # in the current window


@dataclass(frozen=True)
class _Posting:
    """One POST of a pack: the event's body, where it goes, and the secrets that sign it."""

    event_id: uuid.UUID
    payload: dict[str, Any]
    url: str
    secrets: list[bytes]


@dataclass(frozen=True)
class _Posted:
    """What the receiver did: its status (None when it could not be reached, then the error's class)."""

    status_code: int | None
    error: str | None
    took_ms: int


def attempt_events(event_ids: list[uuid.UUID], *, now: datetime | None = None) -> dict[uuid.UUID, Attempted]:
    """`deliver_events`, with the time to each failed event's next attempt. A failed attempt is one
    warning line (the event, the attempt number, the receiver's status or the error's class, the next
    try), never a traceback: a receiver that is down is a normal state, not an error of ours."""
    now = now or datetime.now(UTC)
    results = {event_id: Attempted("done") for event_id in event_ids}
    with transaction() as session:
        db = driver(session)
        rows = (
            db.cursor(row_factory=class_row(_Due))
            .execute(EVENTS_TO_ATTEMPT, {"ids": list(results)})
            .fetchall()
        )
        due = [row for row in rows if not (row.delivered_at or row.given_up_at or not row.webhook_url)]
        secrets = {row.program_id: _cached_secrets(db, row.program_id, row.program_code, now) for row in due}
    if not due:
        return results
    postings = [
        _Posting(row.id, row.payload, url, secrets[row.program_id]) for row in due if (url := row.webhook_url)
    ]
    # One task per posting thread, each posting its share in turn: as fast as a task per event,
    # without a future and a hand-over for every one.
    shares = [postings[i::POSTING_THREADS] for i in range(min(POSTING_THREADS, len(postings)))]
    posted_by_share = list(_pool.map(_post_each, shares)) if len(shares) > 1 else [_post_each(postings)]
    posted: list[_Posted] = [_Posted(None, None, 0)] * len(due)
    for i, share_posted in enumerate(posted_by_share):
        posted[i::POSTING_THREADS] = share_posted
    attempts: list[dict[str, object]] = []
    delivered: list[uuid.UUID] = []
    given_up: list[uuid.UUID] = []
    for row, answer in zip(due, posted, strict=True):
        event_id, attempt, status_code, error = row.id, row.attempts + 1, answer.status_code, answer.error
        next_at = None
        if status_code is not None and 200 <= status_code < 300:
            delivered.append(event_id)
            results[event_id] = Attempted("delivered")
        elif now - row.window_from > GIVE_UP_AFTER:
            given_up.append(event_id)
            results[event_id] = Attempted("given_up")
            log.error(
                "webhook_given_up",
                event_id=str(event_id),
                program=row.program_code,
                type=row.payload.get("type"),
                attempt=attempt,
                status=status_code,
                error=error,
            )
        else:
            delay = retry_delay(attempt)
            next_at = now + timedelta(seconds=delay)
            results[event_id] = Attempted(
                f"retry: receiver answered {status_code or error}", int(delay * 1000)
            )
            log.warning(
                "webhook_attempt_failed",
                event_id=str(event_id),
                program=row.program_code,
                type=row.payload.get("type"),
                attempt=attempt,
                status=status_code,
                error=error,
                next_attempt_at=next_at.isoformat(timespec="seconds"),
                next_attempt_in_s=round(delay, 1),
            )
        attempts.append(
            {
                "event_id": event_id,
                "status_code": status_code,
                "error": error,
                "duration_ms": answer.took_ms,
                "next_attempt_at": next_at,
            }
        )
    WEBHOOK_DELIVERIES.labels("delivered").inc(len(delivered))
    WEBHOOK_DELIVERIES.labels("given_up").inc(len(given_up))
    WEBHOOK_DELIVERIES.labels("retry").inc(len(due) - len(delivered) - len(given_up))
    with transaction() as session:
        db = driver(session)
        db.execute(INSERT_ATTEMPTS, {"now": now, "attempts": batch(attempts)})
        if delivered:
            db.execute(
                "UPDATE webhook_events SET delivered_at = %(now)s WHERE id = ANY(%(ids)s)",
                {"now": now, "ids": delivered},
            )
        if given_up:
            db.execute(
                "UPDATE webhook_events SET given_up_at = %(now)s WHERE id = ANY(%(ids)s)",
                {"now": now, "ids": given_up},
            )
    return results


def _post_each(postings: list[_Posting]) -> list[_Posted]:
    return [_post(posting) for posting in postings]


def _post(posting: _Posting) -> _Posted:
    body = json.dumps(posting.payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = signed_headers(posting.secrets, str(posting.event_id), int(time.time()), body)
    started = time.perf_counter()
    status_code, error = None, None
    try:
        status_code = _connections.post(posting.url, body, headers)
    except Exception as exc:  # noqa: BLE001 - one bad endpoint must not stop the other events of a pack
        error = type(exc).__name__
    return _Posted(status_code, error, int((time.perf_counter() - started) * 1000))


def deliver_event(event_id: uuid.UUID, *, now: datetime | None = None) -> Attempted:
    """One event (the retries of an event that a pack could not deliver)."""
    return attempt_events([event_id], now=now)[event_id]


def purge_finished(db: Connection[Any], *, before: datetime, limit: int) -> int:
    """Deletes up to `limit` events (and their attempts) that were delivered or given up before
    `before`, oldest first (ix_webhook_events_created); pending events stay."""
    ids: list[uuid.UUID] = (
        db.cursor(row_factory=scalar_row)
        .execute(FINISHED_EVENTS, {"before": before, "limit": limit})
        .fetchall()
    )
    if ids:
        db.execute("DELETE FROM webhook_attempts WHERE event_id = ANY(%(ids)s)", {"ids": ids})
        db.execute("DELETE FROM webhook_events WHERE id = ANY(%(ids)s)", {"ids": ids})
    return len(ids)
