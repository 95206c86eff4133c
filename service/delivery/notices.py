"""SMS to a holder that are not the reward itself: a one-time code or a certificate from the reward
page (transactional: the reward SMS's queue and workers, never behind bulk traffic), or an expiry
reminder (bulk: its own queue, and it waits out the program's quiet hours).

The same path as a reward SMS: a row written in the business transaction with its outbox job, a
worker that claims it, hands it to the provider outside any transaction and records the outcome, and
receipts that settle it. A notice is submitted at most once: one whose outcome was never recorded
(`submitting`) is in doubt and is not sent again, since a holder asks for a new one-time code and a
certificate stays on the page. Its text carries a code, so the row keeps it encrypted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from psycopg import Connection
from psycopg.rows import class_row, scalar_row

from service.delivery.providers import (
    OutgoingSms,
    Pace,
    PermanentSmsError,
    Provider,
    Receipt,
    SmsError,
    TransientSmsError,
)
from service.delivery.text import encoding_for, split
from service.kit.db.engine import driver, one, transaction
from service.kit.messaging import jobs, outbox
from service.kit.observability.metrics import SMS_OUTCOMES
from service.kit.security.crypto import get_vault
from service.kit.values.quiet_hours import quiet_hours
from service.kit.values.zones import zone

log = structlog.get_logger("delivery")
CONTEXT = b"sms-notice"
DEADLINES = {"otp": timedelta(minutes=5), "certificate": timedelta(hours=24), "reminder": timedelta(days=3)}
DELIVERED_STATES = {"DELIVRD"}
FAILED_STATES = {"EXPIRED", "DELETED", "UNDELIV", "REJECTD"}


class NoticeLater(Exception):
    """A bulk notice inside its program's quiet hours: try again at `at`."""

    def __init__(self, at: datetime):
        super().__init__(f"quiet hours until {at.isoformat()}")
        self.at = at


def queue_notice(
    db: Connection[Any],
    *,
    redemption_id: uuid.UUID,
    program_id: int,
    kind: str,
    msisdn: str,
    sender: str,
    locale: str,
    text: str,
    now: datetime,
) -> int:
    """The notice and its outbox job, in the caller's transaction; returns its id. Reminders are bulk."""
    vault = get_vault()
    bulk = kind == "reminder"
    notice_id: int = one(
        db.cursor(row_factory=scalar_row)
        .execute(
            "INSERT INTO sms_notices (redemption_id, program_id, kind, bulk, msisdn, sender, locale,"
            " text_enc, key_id, deadline_at, created_at, updated_at) VALUES (%(rid)s, %(program)s,"
            " %(kind)s, %(bulk)s, %(msisdn)s, %(sender)s, %(locale)s, %(text)s, %(key)s, %(deadline)s,"
            " %(now)s, %(now)s)"
            " RETURNING id",
            {
                "rid": redemption_id,
                "program": program_id,
                "kind": kind,
                "bulk": bulk,
                "msisdn": msisdn,
                "sender": sender,
                "locale": locale,
                "text": vault.encrypt(text, CONTEXT),
                "key": vault.key_id,
                "deadline": now + DEADLINES[kind],
                "now": now,
            },
        )
        .fetchone()
    )
    outbox.enqueue(db, jobs.BULK_NOTICE_SMS if bulk else jobs.NOTICE_SMS, {"notice_id": notice_id}, now=now)
    return notice_id


@dataclass(frozen=True)
class _Claimed:
    id: int
    kind: str
    bulk: bool
    status: str
    msisdn: str
    sender: str
    text_enc: bytes
    key_id: str | None
    deadline_at: datetime
    quiet_hours: str | None
    timezone: str


def _claim(notice_id: int, now: datetime) -> OutgoingSms | str | NoticeLater:
    """Marks a pending notice `submitting` and returns its SMS; else why not (a status, or later)."""
    with transaction() as session:
        db = driver(session)
        row = (
            db.cursor(row_factory=class_row(_Claimed))
            .execute(
                "SELECT n.id, n.kind, n.bulk, n.status, n.msisdn, n.sender, n.text_enc, n.key_id,"
                " n.deadline_at, p.quiet_hours, p.timezone FROM sms_notices n"
                " JOIN programs p ON p.id = n.program_id WHERE n.id = %(id)s FOR UPDATE OF n",
                {"id": notice_id},
            )
            .fetchone()
        )
        if row is None or row.status != "pending":
            return row.status if row is not None else "missing"
        if now >= row.deadline_at:
            db.execute(
                "UPDATE sms_notices SET status = 'failed', last_error = 'not sent by its deadline',"
                " updated_at = %(now)s WHERE id = %(id)s",
                {"now": now, "id": notice_id},
            )
            return "failed"
        window = quiet_hours(row.quiet_hours) if row.bulk else None
        if window is not None:
            allowed = window.next_allowed(now, zone(row.timezone))
            if allowed > now:
                return NoticeLater(allowed)
        text = get_vault().decrypt(bytes(row.text_enc), CONTEXT, row.key_id)
        encoding = encoding_for(text)
        segments = len(split(text, encoding))
        db.execute(
            "UPDATE sms_notices SET status = 'submitting', attempts = attempts + 1, encoding = %(encoding)s,"
            " segments = %(segments)s, updated_at = %(now)s WHERE id = %(id)s",
            {"encoding": encoding, "segments": segments, "now": now, "id": notice_id},
        )
    return OutgoingSms(f"notice:{notice_id}", row.msisdn, row.sender, text, encoding, segments)


def deliver_notice(
    notice_id: int,
    *,
    provider: Provider,
    now: datetime | None = None,
    pace: Pace | None = None,
) -> str:
    """One notice to the provider: its status after the attempt ('sent', 'failed', or what it was
    already). Raises TransientSmsError (retry with backoff: the provider did not take it) or
    NoticeLater (quiet hours). `pace(n)` grants up to n submit_sm PDUs of the provider's rate (the
    workers' shared limit, as for reward SMS); none granted is a transient refusal, retried."""
    now = now or datetime.now(UTC)
    claimed = _claim(notice_id, now)
    if isinstance(claimed, NoticeLater):
        raise claimed
    if isinstance(claimed, str):
        return claimed
    if pace is not None and pace(claimed.segments, claimed.segments) < claimed.segments:
        result: SmsError | list[str] = TransientSmsError(
            "the provider's rate limit: no room for its parts now"
        )
    else:
        result = provider.submit_many([claimed])[0]
    with transaction() as session:
        db = driver(session)
        if isinstance(result, TransientSmsError):
            db.execute(
                "UPDATE sms_notices SET status = 'pending', last_error = %(error)s, updated_at = now()"
                " WHERE id = %(id)s",
                {"error": str(result), "id": notice_id},
            )
        elif isinstance(result, PermanentSmsError):
            db.execute(
                "UPDATE sms_notices SET status = 'failed', last_error = %(error)s, updated_at = now()"
                " WHERE id = %(id)s",
                {"error": f"permanent provider error: {result}", "id": notice_id},
            )
        elif isinstance(result, SmsError):  # in doubt: it may have been taken; never sent again
            db.execute(
                "UPDATE sms_notices SET last_error = %(error)s, updated_at = now() WHERE id = %(id)s",
                {"error": str(result), "id": notice_id},
            )
        else:
            db.execute(
                "UPDATE sms_notices SET status = 'sent', provider = %(provider)s,"
                " provider_message_ids = %(ids)s, sent_at = now(), updated_at = now(), last_error = NULL"
                " WHERE id = %(id)s",
                {"provider": provider.name, "ids": result, "id": notice_id},
            )
    if isinstance(result, TransientSmsError):
        SMS_OUTCOMES.labels("transient").inc()
        raise result
    outcome = (
        "failed"
        if isinstance(result, PermanentSmsError)
        else "in_doubt"
        if isinstance(result, SmsError)
        else "sent"
    )
    SMS_OUTCOMES.labels(outcome).inc()
    log.info("sms_notice", notice_id=notice_id, outcome=outcome)
    return "failed" if outcome == "failed" else "sent" if outcome == "sent" else "submitting"


def apply_notice_receipts(db: Connection[Any], provider: str, receipts: list[Receipt]) -> set[str]:
    """Receipts for notices (which the reward SMS's lookup does not know), in the caller's
    transaction: a failed part fails the notice, a delivered one delivers it. Returns the provider ids
    that belong to a notice."""
    if not receipts:
        return set()
    ids = [r.message_id for r in receipts]
    found = db.execute(
        "SELECT id, provider_message_ids FROM sms_notices WHERE status IN ('sent', 'delivered')"
        " AND sent_at > now() - interval '7 days' AND provider = %(provider)s"
        " AND provider_message_ids && %(ids)s::varchar[] ORDER BY id FOR UPDATE",
        {"provider": provider, "ids": ids},
    ).fetchall()
    owner = {message_id: notice_id for notice_id, message_ids in found for message_id in message_ids}
    states: dict[int, str] = {}
    for receipt in receipts:
        notice_id = owner.get(receipt.message_id)
        if notice_id is None:
            continue
        if receipt.state in FAILED_STATES:
            states[notice_id] = "failed"
        elif receipt.state in DELIVERED_STATES:
            states.setdefault(notice_id, "delivered")
    for notice_id, status in states.items():
        db.execute(
            "UPDATE sms_notices SET status = %(status)s, updated_at = now(),"
            " last_error = CASE WHEN %(failed)s THEN 'undeliverable' ELSE last_error END WHERE id = %(id)s",
            {"status": status, "failed": status == "failed", "id": notice_id},
        )
    return set(owner)
