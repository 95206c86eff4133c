"""The webhook events an integrator can see and replay: newest first, filtered by status, program,
type and month, keyset-paginated; a replay sends an event again under its own id, with a new 24-hour
window of retries."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.events.errors import WebhookNotConfigured
from service.kit.db.engine import driver
from service.kit.http.errors import not_found
from service.kit.messaging import jobs, outbox

EventStatus = Literal["pending", "delivered", "given_up"]
# A cursor: (created_at in microseconds since 1970, id) of the last event of the page before. 17 digits
# stay before the year 9999, so every value of this form is a position.
POSITION = r"^[0-9]{1,17}_[0-9a-f]{32}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

STATUS_SQL = (
    "CASE WHEN e.delivered_at IS NOT NULL THEN 'delivered'"
    " WHEN e.given_up_at IS NOT NULL THEN 'given_up' ELSE 'pending' END"
)
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


_SELECT = (
    "SELECT e.id, e.type, p.code, e.created_at, " + STATUS_SQL + ", e.delivered_at, e.given_up_at,"
    " e.replays, e.payload, a.attempts, a.attempted_at, a.status_code, a.error, a.duration_ms, e.sandbox,"
    " a.next_attempt_at"
    " FROM webhook_events e JOIN programs p ON p.id = e.program_id"
    " LEFT JOIN LATERAL (SELECT count(*) OVER () AS attempts, attempted_at, status_code, error, duration_ms,"
    "   next_attempt_at"
    "   FROM webhook_attempts WHERE event_id = e.id ORDER BY attempted_at DESC, id DESC LIMIT 1) a ON true"
)


def _out(row: Any) -> WebhookEventOut:
    return WebhookEventOut(
        id=row[0],
        type=row[1],
        program=row[2],
        sandbox=row[14],
        created_at=row[3],
        status=row[4],
        delivered_at=row[5],
        given_up_at=row[6],
        replays=row[7],
        payload=row[8],
        attempts=row[9] or 0,
        last_attempt=WebhookAttemptOut(
            attempted_at=row[10],
            status_code=row[11],
            error=row[12],
            duration_ms=row[13],
            next_attempt_at=row[15],
        )
        if row[10] is not None
        else None,
    )


@dataclass(frozen=True)
class EventPage:
    items: list[WebhookEventOut]
    next_cursor: str | None


def list_events(
    db: Any,
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
    params: dict[str, Any] = {"limit": limit + 1}  # one more: is there a page after this one?
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
    sql = (
        _SELECT
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY e.created_at DESC, e.id DESC LIMIT %(limit)s"
    )
    items = [_out(row) for row in db.execute(sql, params).fetchall()]
    last = items[limit - 1] if len(items) > limit else None
    return EventPage(items[:limit], cursor_of(last.created_at, last.id) if last else None)


def get_event(
    db: Any, event_id: uuid.UUID, *, programs: frozenset[str] | None, sandbox: bool | None
) -> WebhookEventOut:
    """One event the caller may see (`programs` and `sandbox` as for list_events): 404 otherwise, the
    same as for an event that does not exist."""
    row = db.execute(_SELECT + " WHERE e.id = %s", (event_id,)).fetchone()
    if (
        row is None
        or (programs is not None and row[2] not in programs)
        or (sandbox is not None and row[14] != sandbox)
    ):
        raise not_found(f"webhook event {event_id}")
    return _out(row)


def replay(
    session: Any,
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
    url = db.execute(
        "SELECT p.webhook_url FROM webhook_events e JOIN programs p ON p.id = e.program_id WHERE e.id = %s",
        (event_id,),
    ).fetchone()
    if url is None or not url[0]:
        raise WebhookNotConfigured(f"program {event.program} has no webhook_url to send it to")
    db.execute(
        "UPDATE webhook_events SET delivered_at = NULL, given_up_at = NULL, deliver_from = %s,"
        " replays = replays + 1 WHERE id = %s",
        (now, event_id),
    )
    outbox.enqueue(db, jobs.WEBHOOK, {"event_id": str(event_id)}, now=now)
    return get_event(db, event_id, programs=programs, sandbox=sandbox)
