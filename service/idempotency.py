"""Idempotency-Key with Stripe's replay rules, per API client, kept 48 hours.

The key row is inserted first, in the same transaction as the effect. A concurrent request with
the same key blocks on the unique index until that transaction ends, then finds the stored response
and replays it: there is never a second effect, and no "in progress" row is ever left behind by a
crash (the insert rolls back with everything else). A request still blocked after LOCK_WAIT gets
409 idempotency_in_progress. Refusals raised inside the handler are rolled back to a savepoint and
stored, so they replay too; malformed requests (rejected before the handler runs) are not stored."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg import errors as pg_errors
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.errors import Problem
from service.faults import checkpoint

RETENTION = timedelta(hours=48)
LOCK_WAIT = "5s"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool


def request_fingerprint(method: str, path: str, payload: Any) -> bytes:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).digest()


def validate_key(key: str | None, required: bool) -> str | None:
    if key is None or key == "":
        if required:
            raise Problem(400, "idempotency_key_missing", "Idempotency-Key missing",
                          "this request needs an Idempotency-Key header (a unique string per operation)")
        return None
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(422, "validation_error", "Validation failed", "Idempotency-Key must be 1-255 printable characters",
                      errors=[{"field": "header.Idempotency-Key", "message": "1-255 printable characters"}])
    return key


def run_once(session: Session, *, api_key_id: int, key: str, fingerprint: bytes,
             handler: Callable[[], tuple[int, dict[str, Any]]]) -> Outcome:
    """Runs `handler` at most once per (client, key) and returns its stored outcome on repeats.
    Must be the first statement of the caller's transaction."""
    now = datetime.now(timezone.utc)
    session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
    try:
        inserted = session.execute(text(
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, created_at, expires_at)"
            " VALUES (:client, :key, :hash, :now, :expires) ON CONFLICT DO NOTHING RETURNING 1"),
            {"client": api_key_id, "key": key, "hash": fingerprint, "now": now, "expires": now + RETENTION}).scalar()
    except OperationalError as exc:
        if isinstance(exc.orig, pg_errors.LockNotAvailable):
            raise Problem(409, "idempotency_in_progress", "Request in progress",
                          "a request with this Idempotency-Key is still running; retry shortly") from None
        raise
    session.execute(text("SET LOCAL lock_timeout = 0"))
    if not inserted:
        stored = session.execute(text(
            "SELECT request_hash, response_status, response_body FROM idempotency_keys"
            " WHERE api_key_id = :client AND key = :key"), {"client": api_key_id, "key": key}).one()
        if bytes(stored.request_hash) != fingerprint:
            raise Problem(422, "idempotency_conflict", "Idempotency-Key reused",
                          "this Idempotency-Key was used with a different request")
        return Outcome(stored.response_status, stored.response_body, replayed=True)
    checkpoint("idempotency.after_key")
    savepoint = session.begin_nested()
    try:
        status, body = handler()
        savepoint.commit()
    except Problem as problem:
        savepoint.rollback()
        status, body = problem.status, problem.body()
    session.execute(text("UPDATE idempotency_keys SET response_status = :status, response_body = CAST(:body AS jsonb)"
                         " WHERE api_key_id = :client AND key = :key"),
                    {"status": status, "body": json.dumps(body, default=str), "client": api_key_id, "key": key})
    checkpoint("idempotency.after_response")
    return Outcome(status, body, replayed=False)


def purge_expired(session: Session) -> int:
    return session.execute(text("DELETE FROM idempotency_keys WHERE expires_at < now()")).rowcount
