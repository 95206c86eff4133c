"""Read-only queries of the console pages that the API has no route for: a redemption's timeline
(its SMS attempts and webhook events) and the partners a finance page lists."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
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
class WebhookEvent:
    type: str
    created_at: datetime
    delivered_at: datetime | None
    given_up_at: datetime | None
    attempts: int
    last_status: int | None


def sms_attempts(session: Session, redemption_id: uuid.UUID) -> list[SmsAttempt]:
    rows = session.execute(
        text(
            "SELECT send, status, provider, cardinality(provider_message_ids) AS parts, receipts, segments,"
            " attempts, last_error, created_at, sent_at, done_at FROM sms_messages"
            " WHERE redemption_id = :id ORDER BY send"
        ),
        {"id": redemption_id},
    ).all()
    return [SmsAttempt(*row) for row in rows]


def webhook_events(session: Session, redemption_id: uuid.UUID) -> list[WebhookEvent]:
    rows = session.execute(
        text(
            "SELECT e.type, e.created_at, e.delivered_at, e.given_up_at,"
            " (SELECT count(*) FROM webhook_attempts a WHERE a.event_id = e.id) AS attempts,"
            " (SELECT a.status_code FROM webhook_attempts a WHERE a.event_id = e.id"
            "   ORDER BY a.attempted_at DESC, a.id DESC LIMIT 1) AS last_status"
            " FROM webhook_events e WHERE e.redemption_id = :id ORDER BY e.created_at"
        ),
        {"id": redemption_id},
    ).all()
    return [WebhookEvent(*row) for row in rows]


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
        for row in session.execute(text("SELECT code, name FROM partners WHERE active ORDER BY code"))
    ]
