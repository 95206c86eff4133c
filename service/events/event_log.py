"""The webhook events an integrator can see and replay: newest first, filtered by status, program,
type and month, keyset-paginated; a replay sends an event again under its own id, with a new 24-hour
window of retries."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from psycopg import Connection
from psycopg.rows import class_row, scalar_row
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from service.events.errors import WebhookNotConfigured
from service.kit.db import sqlfiles
from service.kit.db.engine import driver
from service.kit.http.errors import not_found
from service.kit.messaging import jobs, outbox

EventStatus = Literal["pending", "delivered", "given_up"]
# A cursor: (created_at in microseconds since 1970, id) of the last event of the page before. 17 digits
# stay before the year 9999, so every value of this form is a position.
POSITION = r"^[0-9]{1,17}_[0-9a-f]{32}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

_SQL = sqlfiles.load("service.events")
EVENT_LOG = _SQL["event_log"]  # without its WHERE and ORDER BY
REPLAY = _SQL["replay"]

_WHERE_STATUS = {
    "delivered": "e.delivered_at IS NOT NULL",
    "given_up": "e.given_up_at IS NOT NULL AND e.delivered_at IS NULL",
    "pending": "e.delivered_at IS NULL AND e.given_up_at IS NULL",
}


class WebhookAttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's answer; none when it could not be reached")
    error: str | None = Field(description="The error's class when the receiver could not be reached")
    duration_ms: int | None
    next_attempt_at: datetime | None = Field(
        default=None, description="After a failed attempt: when the next one is due"
    )


class WebhookEventOut(BaseModel):
    id: uuid.UUID = Field(description="Also the `webhook-id` header: receivers dedupe by it")
    type: str
    program: str
    sandbox: bool = Field(
        description="An event of the sandbox world; a sandbox key sees only these, a real key never"
    )
    created_at: datetime
    status: EventStatus = Field(
        description="pending (being retried), delivered (a 2xx answer), given_up (no 2xx within 24 hours"
        " of its creation or last replay)"
    )
    delivered_at: datetime | None
    given_up_at: datetime | None
    replays: int
    attempts: int
    last_attempt: WebhookAttemptOut | None
    payload: dict[str, Any] = Field(description="The body as sent")


def cursor_of(created_at: datetime, event_id: uuid.UUID) -> str:
    return f"{(created_at - _EPOCH) // _MICRO}_{event_id.hex}"


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    if not re.fullmatch(POSITION, cursor):  # the route's schema lets no other form through
        raise ValueError(cursor)
    micros, hex_id = cursor.split("_")
    return _EPOCH + int(micros) * _MICRO, uuid.UUID(hex_id)


@dataclass(frozen=True)
class _EventRow:
    """A row of event_log.sql."""

    id: uuid.UUID
    type: str
    program: str
    sandbox: bool
    created_at: datetime
    status: EventStatus
    delivered_at: datetime | None
    given_up_at: datetime | None
    replays: int
    payload: dict[str, Any]
    attempts: int | None  # None: no attempt yet (the last attempt's columns are all None then)
    attempted_at: datetime | None
    status_code: int | None
    error: str | None
    duration_ms: int | None
    next_attempt_at: datetime | None


def _out(row: _EventRow) -> WebhookEventOut:
    return WebhookEventOut(
        id=row.id,
        type=row.type,
        program=row.program,
        sandbox=row.sandbox,
        created_at=row.created_at,
        status=row.status,
        delivered_at=row.delivered_at,
        given_up_at=row.given_up_at,
        replays=row.replays,
        payload=row.payload,
        attempts=row.attempts or 0,
        last_attempt=WebhookAttemptOut(
            attempted_at=row.attempted_at,
            status_code=row.status_code,
            error=row.error,
            duration_ms=row.duration_ms,
            next_attempt_at=row.next_attempt_at,
        )
        if row.attempted_at is not None
        else None,
    )


@dataclass(frozen=True)
class EventPage:
    items: list[WebhookEventOut]
    next_cursor: str | None


def list_events(
    db: Connection[Any],
    *,
    programs: frozenset[str] | None,
    sandbox: bool | None,
    limit: int,
    status: EventStatus | None = None,
    program: str | None = None,
    type_: str | None = None,
    month: date | None = None,
    cursor: str | None = None,
) -> EventPage:
    """`programs`: those the caller may see (None: all); `sandbox`: the world it sees (True: only the
    sandbox's events, False: only real ones, None: both). `month`: events created in that month in
    their program's time zone."""
    where: list[str] = []
    params: dict[str, object] = {"limit": limit + 1}  # one more: is there a page after this one?
    if programs is not None:
        where.append("p.code = ANY(%(programs)s)")
        params["programs"] = sorted(programs)
    if sandbox is not None:
        where.append("e.sandbox" if sandbox else "NOT e.sandbox")
    if program is not None:
        where.append("p.code = %(program)s")
        params["program"] = program
    if status is not None:
        where.append(_WHERE_STATUS[status])
    if type_ is not None:
        where.append("e.type = %(type)s")
        params["type"] = type_
    if month is not None:
        where.append(
            "e.created_at >= (%(month)s::date)::timestamp AT TIME ZONE p.timezone"
            " AND e.created_at < ((%(month)s::date + interval '1 month')::timestamp AT TIME ZONE p.timezone)"
        )
        params["month"] = month
    if cursor is not None:
        params["c_at"], params["c_id"] = _parse_cursor(cursor)
        where.append("(e.created_at, e.id) < (%(c_at)s, %(c_id)s)")
    # Composed from the fixed fragments above only; every value goes as a parameter.
    sql = (
        EVENT_LOG
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY e.created_at DESC, e.id DESC LIMIT %(limit)s"
    )
    items = [_out(row) for row in db.cursor(row_factory=class_row(_EventRow)).execute(sql, params).fetchall()]
    last = items[limit - 1] if len(items) > limit else None
    return EventPage(items[:limit], cursor_of(last.created_at, last.id) if last else None)


def get_event(
    db: Connection[Any], event_id: uuid.UUID, *, programs: frozenset[str] | None, sandbox: bool | None
) -> WebhookEventOut:
    """One event the caller may see (`programs` and `sandbox` as for list_events): 404 otherwise, the
    same as for an event that does not exist."""
    row = (
        db.cursor(row_factory=class_row(_EventRow))
        .execute(EVENT_LOG + " WHERE e.id = %(id)s", {"id": event_id})
        .fetchone()
    )
    if (
        row is None
        or (programs is not None and row.program not in programs)
        or (sandbox is not None and row.sandbox != sandbox)
    ):
        raise not_found(f"webhook event {event_id}")
    return _out(row)


def replay(
    session: Session,
    event_id: uuid.UUID,
    *,
    programs: frozenset[str] | None,
    sandbox: bool | None,
    now: datetime | None = None,
) -> WebhookEventOut:
    """Sends the event again, whatever its status, under its own id (receivers that have it dedupe);
    it is retried for 24 hours from now, as a new event would be. A sandbox key replays only sandbox
    events and a real key only real ones: the other world's are 404."""
    now = now or datetime.now(UTC)
    db = driver(session)
    event = get_event(db, event_id, programs=programs, sandbox=sandbox)
    url: str | None = (
        db.cursor(row_factory=scalar_row)
        .execute(
            "SELECT p.webhook_url FROM webhook_events e JOIN programs p ON p.id = e.program_id"
            " WHERE e.id = %(id)s",
            {"id": event_id},
        )
        .fetchone()
    )
    if not url:
        raise WebhookNotConfigured(f"program {event.program} has no webhook_url to send it to")
    db.execute(REPLAY, {"now": now, "id": event_id})
    outbox.enqueue(db, jobs.WEBHOOK, {"event_id": str(event_id)}, now=now)
    return get_event(db, event_id, programs=programs, sandbox=sandbox)
