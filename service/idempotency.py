"""Idempotency-Key with Stripe's replay rules, per API client, kept 48 hours.

Optimistic: the handler runs first and the key row, holding the response, is the last insert of the
same transaction. A second request with the key (a retry, or a concurrent twin) runs into the unique
index: if the first committed, its insert does nothing, it rolls back everything it did and replays
the stored response; if the first is still running, it waits for it (up to the connection's lock
timeout, then 409 idempotency_in_progress). So one key has at most one effect, and a crash leaves no
half-stored key behind. A refusal raised by the handler (out of stock, limit reached, ...) is stored
in a short transaction of its own and replays like a success; requests rejected before the handler
runs (malformed JSON, missing fields) are not stored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import errors as pg_errors
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db import new_session
from service.errors import Problem
from service.faults import checkpoint

RETENTION = timedelta(hours=48)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool


class _Taken(Exception):
    """Another request stored an outcome for this key first."""


def request_fingerprint(method: str, path: str, payload: Any) -> bytes:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).digest()


def validate_key(key: str | None, required: bool) -> str | None:
    if key is None or key == "":
        if required:
            raise Problem(
                400,
                "idempotency_key_missing",
                "Idempotency-Key missing",
                "this request needs an Idempotency-Key header (a unique string per operation)",
            )
        return None
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(
            422,
            "validation_error",
            "Validation failed",
            "Idempotency-Key must be 1-255 printable characters",
            errors=[{"field": "header.Idempotency-Key", "message": "1-255 printable characters"}],
        )
    return key


def _in_progress() -> Problem:
    return Problem(
        409,
        "idempotency_in_progress",
        "Request in progress",
        "a request with this Idempotency-Key is still running; retry shortly",
    )


def _store(session: Session, api_key_id: int, key: str, fingerprint: bytes, status: int, body: dict) -> None:
    now = datetime.now(UTC)
    raw = session.connection().connection.driver_connection
    try:
        stored = raw.execute(
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, response_status, response_body,"
            " created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            (api_key_id, key, fingerprint, status, json.dumps(body, default=str), now, now + RETENTION),
        ).fetchone()
    except pg_errors.LockNotAvailable:
        raise _in_progress() from None
    if stored is None:
        raise _Taken()


def _replay(api_key_id: int, key: str, fingerprint: bytes) -> Outcome:
    with new_session() as session:
        row = session.execute(
            text(
                "SELECT request_hash, response_status, response_body FROM idempotency_keys"
                " WHERE api_key_id = :client AND key = :key"
            ),
            {"client": api_key_id, "key": key},
        ).one_or_none()
    if row is None:  # stored, then purged in between: vanishingly rare; the client may simply retry
        raise _in_progress()
    if bytes(row.request_hash) != fingerprint:
        raise Problem(
            422,
            "idempotency_conflict",
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request",
        )
    return Outcome(row.response_status, row.response_body, replayed=True)


def run_once(
    *, api_key_id: int, key: str, fingerprint: bytes, handler: Callable[[Session], tuple[int, dict[str, Any]]]
) -> Outcome:
    """Runs `handler(session)` in a transaction at most once per (client, key); repeats replay."""
    try:
        with new_session() as session:
            try:
                with session.begin():
                    status, body = handler(session)
                    checkpoint("idempotency.before_store")
                    _store(session, api_key_id, key, fingerprint, status, body)
                    checkpoint("idempotency.after_store")
                return Outcome(status, body, replayed=False)
            except Problem as refusal:
                if refusal.code == "idempotency_in_progress":
                    raise
                body = refusal.body()
                with session.begin():
                    _store(session, api_key_id, key, fingerprint, refusal.status, body)
                return Outcome(refusal.status, body, replayed=False)
    except _Taken:
        return _replay(api_key_id, key, fingerprint)
    except OperationalError as exc:
        if isinstance(exc.orig, pg_errors.LockNotAvailable):
            raise _in_progress() from None
        raise


def purge_expired(session: Session, batch: int = 10_000) -> int:
    """Deletes keys past their retention, a bounded batch per call (the relay calls it every minute)."""
    return session.execute(
        text(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM idempotency_keys"
            " WHERE expires_at < now() ORDER BY expires_at LIMIT :batch))"
        ),
        {"batch": batch},
    ).rowcount
