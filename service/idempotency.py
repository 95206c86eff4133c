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
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from psycopg import errors as pg_errors
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db import driver, new_session
from service.errors import (
    PROBLEM_MEDIA_TYPE,
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyKeyMissing,
    Problem,
    ValidationFailed,
)
from service.faults import checkpoint

RETENTION = timedelta(hours=48)
MAX_KEY_LENGTH = 255


# The header, as routes declare it: required on redemptions and exchanges, optional elsewhere.
IdempotencyKeyHeader = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Unique per operation; replays return the first response (kept 48 h)",
    ),
]
OptionalIdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Optional; with it, replays return the first response (kept 48 h)",
    ),
]

# What every route that takes the header may answer because of it.
IDEMPOTENCY_PROBLEMS = (IdempotencyConflict, IdempotencyInProgress)


@dataclass(frozen=True)
class StoredResponse:
    """The response of the first request with a key: what it answered, and whether this is a replay."""

    status: int
    body: dict[str, Any]
    replayed: bool

    def response(self) -> JSONResponse:
        headers = {"Idempotent-Replayed": "true"} if self.replayed else None
        media_type = PROBLEM_MEDIA_TYPE if self.status >= 400 else "application/json"
        return JSONResponse(self.body, status_code=self.status, headers=headers, media_type=media_type)


class _Taken(Exception):
    """Another request stored an outcome for this key first."""


def request_fingerprint(method: str, path: str, payload: Any) -> bytes:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).digest()


def required_key(key: str | None) -> str:
    """The Idempotency-Key of a request that must carry one."""
    checked = validate_key(key, required=True)
    assert checked is not None  # validate_key refuses a missing key when it is required
    return checked


def validate_key(key: str | None, required: bool) -> str | None:
    if key is None or key == "":
        if required:
            raise IdempotencyKeyMissing(
                "this request needs an Idempotency-Key header (a unique string per operation)",
            )
        return None
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            "Idempotency-Key must be 1-255 printable characters",
            errors=[{"field": "header.Idempotency-Key", "message": "1-255 printable characters"}],
        )
    return key


def _in_progress() -> Problem:
    return IdempotencyInProgress(
        "a request with this Idempotency-Key is still running; retry shortly",
    )


STORE_RESPONSE = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, response_status, response_body,"
    " created_at, expires_at) VALUES (%(client)s, %(key)s, %(hash)s, %(status)s, %(body)s, %(now)s,"
    " %(expires)s) ON CONFLICT DO NOTHING RETURNING 1"
)


def _store(session: Session, api_key_id: int, key: str, fingerprint: bytes, status: int, body: dict) -> None:
    now = datetime.now(UTC)
    params = {
        "client": api_key_id,
        "key": key,
        "hash": fingerprint,
        "status": status,
        "body": json.dumps(body, default=str),
        "now": now,
        "expires": now + RETENTION,
    }
    try:
        stored = driver(session).execute(STORE_RESPONSE, params).fetchone()
    except pg_errors.LockNotAvailable:
        raise _in_progress() from None
    if stored is None:
        raise _Taken()


def _replay(api_key_id: int, key: str, fingerprint: bytes) -> StoredResponse:
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
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request",
        )
    return StoredResponse(row.response_status, row.response_body, replayed=True)


def run_once(
    *, api_key_id: int, key: str, fingerprint: bytes, handler: Callable[[Session], tuple[int, dict[str, Any]]]
) -> StoredResponse:
    """Runs `handler(session)` in a transaction at most once per (client, key); repeats replay."""
    try:
        with new_session() as session:
            try:
                with session.begin():
                    status, body = handler(session)
                    checkpoint("idempotency.before_store")
                    _store(session, api_key_id, key, fingerprint, status, body)
                    checkpoint("idempotency.after_store")
                return StoredResponse(status, body, replayed=False)
            except Problem as refusal:
                if refusal.code == "idempotency_in_progress":
                    raise
                body = refusal.body()
                with session.begin():
                    _store(session, api_key_id, key, fingerprint, refusal.status, body)
                return StoredResponse(refusal.status, body, replayed=False)
    except _Taken:
        return _replay(api_key_id, key, fingerprint)
    except OperationalError as exc:
        if isinstance(exc.orig, pg_errors.LockNotAvailable):
            raise _in_progress() from None
        raise


def purge_expired(session: Session, batch: int = 10_000) -> int:
    """Deletes keys past their retention, a bounded batch per call (the relay calls it every minute)."""
    return (
        driver(session)
        .execute(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM idempotency_keys"
            " WHERE expires_at < now() ORDER BY expires_at LIMIT %(batch)s))",
            {"batch": batch},
        )
        .rowcount
    )
