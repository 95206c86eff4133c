"""Read-only queries of the console pages that the API has no route for: a redemption's timeline
(its SMS attempts and webhook events) and the partners a finance page lists."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.holders.service import PageEvent


@dataclass(frozen=True)
class SmsAttempt:
    send: int
    status: str
    provider: str | None
    parts: int
    receipts: dict[str, str]
    segments: int | None
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    done_at: datetime | None


@dataclass(frozen=True)
class WebhookTry:
    """One attempt, as its worker logged it: the receiver's status or the error's class, and when
    the next attempt is due."""

    number: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class WebhookEvent:
    id: uuid.UUID
    type: str
    created_at: datetime
    delivered_at: datetime | None
    given_up_at: datetime | None
    tries: list[WebhookTry]

    @property
    def attempts(self) -> int:
        return len(self.tries)


def sms_attempts(session: Session, redemption_id: uuid.UUID) -> list[SmsAttempt]:
    rows = (
        session.connection()
        .exec_driver_sql(
            "SELECT send, status, provider, cardinality(provider_message_ids) AS parts, receipts, segments,"
            " attempts, last_error, created_at, sent_at, done_at FROM sms_messages"
            " WHERE redemption_id = %(id)s ORDER BY send",
            {"id": redemption_id},
        )
        .all()
    )
    return [SmsAttempt(*row) for row in rows]


# The attempts of an event shown on the page: its first ones and its latest ones (an event of a receiver
# that is down for a day has some thirty).
SHOWN_TRIES = 10


def webhook_events(session: Session, redemption_id: uuid.UUID) -> list[WebhookEvent]:
    events = (
        session.connection()
        .exec_driver_sql(
            "SELECT e.id, e.type, e.created_at, e.delivered_at, e.given_up_at"
            " FROM webhook_events e WHERE e.redemption_id = %(id)s ORDER BY e.created_at",
            {"id": redemption_id},
        )
        .all()
    )
    tries: dict[uuid.UUID, list[WebhookTry]] = {row.id: [] for row in events}
    if tries:
        for row in session.connection().exec_driver_sql(
            "SELECT event_id, row_number() OVER (PARTITION BY event_id ORDER BY attempted_at, id) AS n,"
            " attempted_at, status_code, error, next_attempt_at FROM webhook_attempts"
            " WHERE event_id = ANY(%(ids)s) ORDER BY event_id, attempted_at, id",
            {"ids": list(tries)},
        ):
            tries[row.event_id].append(
                WebhookTry(row.n, row.attempted_at, row.status_code, row.error, row.next_attempt_at)
            )
    return [
        WebhookEvent(row.id, row.type, row.created_at, row.delivered_at, row.given_up_at, tries[row.id])
        for row in events
    ]


def shown_tries(tries: list[WebhookTry]) -> list[WebhookTry | None]:
    """The first and the latest attempts, with None where some in between are left out."""
    if len(tries) <= SHOWN_TRIES:
        return list(tries)
    half = SHOWN_TRIES // 2
    return [*tries[:half], None, *tries[-half:]]


def timeline(
    session: Session,
    redemption: Any,
    sms: list[SmsAttempt],
    hooks: list[WebhookEvent],
    page: list[PageEvent] | None = None,
) -> list[dict[str, Any]]:
    """Everything that happened to a redemption, oldest first, with what its holder did on the reward
    page (a code shown, one-time codes, an online exchange)."""
    events: list[dict[str, Any]] = [{"at": redemption.created_at, "kind": "created"}]
    events += [{"at": m.created_at, "kind": "sms", "sms": m} for m in sms]
    known = {m.send for m in sms}
    for send in range(1, redemption.resend_count + 1):  # asked for, not yet taken by a worker
        if send not in known:
            events.append({"at": redemption.updated_at, "kind": "queued", "send": send})
    events += [{"at": h.created_at, "kind": "webhook", "hook": h} for h in hooks]
    events += [{"at": p.at, "kind": "page", "page": p} for p in page or []]
    return sorted(events, key=lambda e: e["at"])


def partners(session: Session) -> list[tuple[str, str]]:
    return [
        (row.code, row.name)
        for row in session.connection().exec_driver_sql(
            "SELECT code, name FROM partners WHERE active ORDER BY code"
        )
    ]


def staff_emails(session: Session, refs: list[str | None]) -> dict[str, str]:
    """The e-mails of staff actors named `staff:<account id>` (as campaigns record who submitted,
    approved or rejected), for the page to show a person rather than a number."""
    ids = {int(ref.split(":", 1)[1]) for ref in refs if ref and re.fullmatch(r"staff:\d+", ref)}
    if not ids:
        return {}
    rows = session.connection().exec_driver_sql(
        "SELECT id, email FROM staff_accounts WHERE id = ANY(%(ids)s)", {"ids": list(ids)}
    )
    return {f"staff:{row.id}": row.email for row in rows}
