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

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import Header
from fastapi.responses import Response
from psycopg import AsyncConnection
from psycopg import errors as pg_errors
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.kit.db.engine import driver, new_session
from service.kit.db.pipeline import pipeline as one_write_pipeline
from service.kit.http.errors import (
    PROBLEM_MEDIA_TYPE,
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyKeyMissing,
    Problem,
    ValidationFailed,
)
from service.kit.reliability.faults import checkpoint

RETENTION = timedelta(hours=48)
MAX_KEY_LENGTH = 255
# Visible ASCII, spaces inside only (HTTP drops a header value's outer whitespace): what
# validate_key accepts, as the document states it.
KEY_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$"
KEY_DESCRIPTION = "1-255 visible ASCII characters (spaces inside allowed)"


# The header, as routes declare it: required on redemptions and exchanges, optional elsewhere.
IdempotencyKeyHeader = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=KEY_PATTERN,
        description="Unique per operation; replays return the first response (kept 48 h). " + KEY_DESCRIPTION,
    ),
]
OptionalIdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=KEY_PATTERN,
        description="Optional; with it, replays return the first response (kept 48 h). " + KEY_DESCRIPTION,
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

    def response(self) -> Response:
        headers = {"Idempotent-Replayed": "true"} if self.replayed else None
        media_type = PROBLEM_MEDIA_TYPE if self.status >= 400 else "application/json"
        return Response(
            orjson.dumps(self.body), status_code=self.status, headers=headers, media_type=media_type
        )


@dataclass(frozen=True)
class AtCommit:
    """A statement a handler leaves for the commit: sent after the response row and before COMMIT, in
    the same round trip, so that a row every request waits for (a program's budget) is locked only
    inside the server. It refuses by raising; `refusal` turns that error into the Problem to store."""

    sql: str
    params: dict[str, Any]
    refusal: Callable[[psycopg.Error], Problem | None]


class _Taken(Exception):
    """Another request stored an outcome for this key first."""


def request_fingerprint(method: str, path: str, payload: object) -> bytes:
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
    if len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise ValidationFailed(
            f"Idempotency-Key must be {KEY_DESCRIPTION}",
            errors=[{"field": "header.Idempotency-Key", "message": KEY_DESCRIPTION}],
        )
    return key


def _in_progress() -> Problem:
    return IdempotencyInProgress(
        "a request with this Idempotency-Key is still running; retry shortly",
    )


# No ON CONFLICT: a key stored by another request is a unique violation, which aborts this
# transaction, so that the COMMIT sent with the insert (one round trip) becomes a rollback.
STORE_RESPONSE = (
    "INSERT INTO idempotency_keys (api_key_id, key, request_hash, response_status, response_body,"
    " created_at, expires_at) VALUES (%(client)s, %(key)s, %(hash)s, %(status)s, %(body)s, %(now)s,"
    " %(expires)s)"
)


def _store_params(
    api_key_id: int, key: str, fingerprint: bytes, status: int, body: dict[str, Any]
) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "client": api_key_id,
        "key": key,
        "hash": fingerprint,
        "status": status,
        "body": orjson.dumps(body, default=str).decode(),
        "now": now,
        "expires": now + RETENTION,
    }


def _store_and_commit(
    session: Session, api_key_id: int, key: str, fingerprint: bytes, status: int, body: dict[str, Any]
) -> None:
    """Stores the response with the key and commits the transaction, in one round trip (pipelined).
    A twin that stored first makes it roll back (_Taken); one still running makes it wait, up to the
    lock timeout (then 409 idempotency_in_progress)."""
    db = driver(session)
    try:
        # COMMIT as a statement of the pipeline, not commit(), which would wait for its own Sync:
        # leaving the pipeline sends one Sync for both, so this is one round trip.
        with db.pipeline():
            db.execute(STORE_RESPONSE, _store_params(api_key_id, key, fingerprint, status, body))
            checkpoint("idempotency.before_commit")
            db.execute("COMMIT")
    except pg_errors.UniqueViolation:
        raise _Taken() from None
    except pg_errors.LockNotAvailable:
        raise _in_progress() from None


STORED_RESPONSE = (
    "SELECT request_hash, response_status, response_body FROM idempotency_keys"
    " WHERE api_key_id = %(client)s AND key = %(key)s"
)


@dataclass(frozen=True)
class _Stored:
    """A row of STORED_RESPONSE."""

    request_hash: bytes
    response_status: int
    response_body: dict[str, Any]


def _replayed(row: _Stored | None, fingerprint: bytes) -> StoredResponse:
    if row is None:  # stored, then purged in between: vanishingly rare; the client may simply retry
        raise _in_progress()
    if bytes(row.request_hash) != fingerprint:
        raise IdempotencyConflict("this Idempotency-Key was used with a different request")
    return StoredResponse(row.response_status, row.response_body, replayed=True)


def _replay(api_key_id: int, key: str, fingerprint: bytes) -> StoredResponse:
    with new_session() as session:
        stored = driver(session).cursor(row_factory=class_row(_Stored))
        row = stored.execute(STORED_RESPONSE, {"client": api_key_id, "key": key}).fetchone()
    return _replayed(row, fingerprint)


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
                    _store_and_commit(session, api_key_id, key, fingerprint, status, body)
                return StoredResponse(status, body, replayed=False)
            except Problem as refusal:
                if refusal.code == "idempotency_in_progress":
                    raise
                body = refusal.body()
                with session.begin():
                    _store_and_commit(session, api_key_id, key, fingerprint, refusal.status, body)
                return StoredResponse(refusal.status, body, replayed=False)
    except _Taken:
        return _replay(api_key_id, key, fingerprint)
    except OperationalError as exc:
        if isinstance(exc.orig, pg_errors.LockNotAvailable):
            raise _in_progress() from None
        raise


async def run_once_async(
    pool: AsyncConnectionPool,
    *,
    api_key_id: int,
    key: str,
    fingerprint: bytes,
    handler: Callable[[AsyncConnection[Any]], Awaitable[tuple[int, dict[str, Any], AtCommit | None]]],
) -> StoredResponse:
    """run_once() on the event loop, with a connection of the asyncio pool: the same rules. The
    handler may leave one statement for the commit's round trip (AtCommit)."""
    try:
        async with pool.connection() as conn:
            try:
                status, body, last = await handler(conn)
                checkpoint("idempotency.before_store")
                await _store_and_commit_async(conn, api_key_id, key, fingerprint, status, body, last)
                return StoredResponse(status, body, replayed=False)
            except Problem as refusal:
                if refusal.code == "idempotency_in_progress":
                    raise
                await conn.rollback()
                body = refusal.body()
                await _store_and_commit_async(conn, api_key_id, key, fingerprint, refusal.status, body)
                return StoredResponse(refusal.status, body, replayed=False)
    except _Taken:
        async with pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(_Stored))
            await cursor.execute(STORED_RESPONSE, {"client": api_key_id, "key": key})
            return _replayed(await cursor.fetchone(), fingerprint)
    except pg_errors.LockNotAvailable:
        raise _in_progress() from None
    except psycopg.OperationalError:
        # The pool discards this broken connection; a server that went away broke the idle ones too:
        # have them checked now, rather than let each fail a request of its own.
        _checks.add(task := asyncio.get_running_loop().create_task(pool.check()))
        task.add_done_callback(_checks.discard)
        raise


_checks: set[asyncio.Task[None]] = set()  # held until done (the event loop keeps weak references)


async def _store_and_commit_async(
    conn: AsyncConnection[Any],
    api_key_id: int,
    key: str,
    fingerprint: bytes,
    status: int,
    body: dict[str, Any],
    last: AtCommit | None = None,
) -> None:
    """_store_and_commit() on an asyncio connection, with the handler's last statement if it left one:
    an error of that statement aborts the transaction, so the COMMIT behind it rolls back."""
    try:
        # The handler's transaction, or a refusal's own (one_write_pipeline opens it).
        async with one_write_pipeline(conn):
            await conn.execute(STORE_RESPONSE, _store_params(api_key_id, key, fingerprint, status, body))
            if last is not None:
                await conn.execute(last.sql, last.params)
            checkpoint("idempotency.before_commit")
            await conn.execute("COMMIT")
    except pg_errors.UniqueViolation:
        raise _Taken() from None
    except psycopg.DatabaseError as exc:
        refusal = last.refusal(exc) if last is not None else None
        if refusal is None:
            raise
        raise refusal from None


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
