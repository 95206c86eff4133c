"""Delivering a redemption's SMS: claim the message row, render, hand it to the provider outside any
transaction, record the outcome; and receipts. Status moves accepted -> sent -> delivered, or to
failed (permanent error, or still undelivered at the deadline) with the reason."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from sqlalchemy import text

from service.catalog.snapshot import get_snapshot
from service.config import get_settings
from service.crypto import get_vault
from service.db import driver, transaction
from service.delivery import webhooks
from service.delivery.providers import (InDoubtSmsError, OutgoingSms, PermanentSmsError, Provider, Receipt,
                                        TransientSmsError, get_provider)
from service.delivery.text import NO_EXPIRY, format_amount, render
from service.faults import checkpoint
from service.metrics import SMS_OUTCOMES

log = structlog.get_logger("delivery")
DELIVERED_STATES = {"DELIVRD"}
FAILED_STATES = {"EXPIRED", "DELETED", "UNDELIV", "REJECTD"}


class ReceiptTooEarly(Exception):
    """A receipt overtook the commit of its own submit: the provider must offer it again shortly."""


# An attempt younger than this is still being recorded, not in doubt: its receipt waits for it.
SUBMIT_GRACE = timedelta(seconds=5)


class RetryLater(Exception):
    def __init__(self, reason: str, delay_ms: int):
        super().__init__(reason)
        self.delay_ms = delay_ms


@dataclass(frozen=True)
class Claimed:
    message_id: int
    sms: OutgoingSms


def _settings():
    s = get_settings()
    return timedelta(hours=s.sms_deadline_hours), timedelta(seconds=s.sms_in_doubt_seconds)


def _fields(session, row: Any, snap, locale: str) -> tuple[str, dict[str, str]]:
    vault = get_vault()
    program = snap.programs_by_id[row.program_id]
    product = snap.products[row.product_id]
    fields = {"program": program.name, "offer": snap.offers_by_id[row.offer_id].name, "brand": product.brand or "",
              "partner": product.partner_code or "", "nominal": format_amount(row.nominal_minor, row.currency, locale),
              "expires": (row.reward_expires_at.astimezone(program.zone).strftime("%d.%m.%Y")
                          if row.reward_expires_at else NO_EXPIRY.get(locale, NO_EXPIRY["ru"])),
              "code": "", "pin": "", "card_number": ""}
    if row.code_id is not None:
        code = session.execute(text("SELECT code_enc, pin_enc FROM codes WHERE id = :id"), {"id": row.code_id}).one()
        fields["code"] = vault.decrypt(bytes(code.code_enc), b"code")
        fields["pin"] = vault.decrypt(bytes(code.pin_enc), b"pin") if code.pin_enc else ""
        return "code", fields
    card = session.execute(text("SELECT number_enc, pin_enc FROM cards WHERE id = :id"), {"id": row.card_id}).one()
    fields["card_number"] = vault.decrypt(bytes(card.number_enc), b"card-number")
    fields["pin"] = vault.decrypt(bytes(card.pin_enc), b"card-pin")
    return "universal_card", fields


def _fail(db: Any, *, message_id: int, redemption_id: uuid.UUID, reason: str, now: datetime, snap) -> None:
    db.execute("UPDATE sms_messages SET status = 'failed', last_error = %s, done_at = %s, updated_at = %s"
               " WHERE id = %s", (reason, now, now, message_id))
    changed = db.execute(
        "UPDATE redemptions SET status = 'failed', status_reason = %s, updated_at = %s"
        " WHERE id = %s AND status IN ('accepted', 'sent') RETURNING external_id, program_id",
        (reason, now, redemption_id)).fetchone()
    if changed:
        program = snap.programs_by_id[changed[1]]
        webhooks.emit(db, program_id=program.id, webhook_url=program.webhook_url, redemption_id=redemption_id,
                      event="failed", now=now, data={"redemption_id": str(redemption_id),
                                                     "external_id": changed[0], "status": "failed",
                                                     "status_reason": reason})
    SMS_OUTCOMES.labels("failed").inc()


def _mark_sent(db: Any, *, message_id: int, redemption_id: uuid.UUID, provider: str, ids: list[str],
               now: datetime, snap) -> None:
    db.execute("UPDATE sms_messages SET status = 'sent', provider = %s, provider_message_ids = %s, sent_at = %s,"
               " updated_at = %s, last_error = NULL WHERE id = %s", (provider, ids, now, now, message_id))
    changed = db.execute(
        "UPDATE redemptions SET status = 'sent', status_reason = NULL, first_sent_at = coalesce(first_sent_at, %s),"
        " updated_at = %s WHERE id = %s AND status IN ('accepted', 'failed')"
        " RETURNING external_id, program_id, code_id", (now, now, redemption_id)).fetchone()
    if changed:
        if changed[2] is not None:  # the code has left us: it is issued now
            db.execute("UPDATE codes SET status = 'issued', status_changed_at = %s WHERE id = %s"
                       " AND status = 'reserved'", (now, changed[2]))
        program = snap.programs_by_id[changed[1]]
        webhooks.emit(db, program_id=program.id, webhook_url=program.webhook_url, redemption_id=redemption_id,
                      event="sent", now=now, data={"redemption_id": str(redemption_id), "external_id": changed[0],
                                                   "status": "sent"})
    SMS_OUTCOMES.labels("sent").inc()


def _delivered(db: Any, *, sms_id: int, redemption_id: uuid.UUID, now: datetime, snap) -> None:
    db.execute("UPDATE sms_messages SET status = 'delivered', done_at = %s, updated_at = %s WHERE id = %s",
               (now, now, sms_id))
    changed = db.execute("UPDATE redemptions SET status = 'delivered', status_reason = NULL, updated_at = %s"
                         " WHERE id = %s AND status IN ('sent', 'accepted', 'failed')"
                         " RETURNING external_id, program_id", (now, redemption_id)).fetchone()
    if changed:
        program = snap.programs_by_id[changed[1]]
        webhooks.emit(db, program_id=program.id, webhook_url=program.webhook_url, redemption_id=redemption_id,
                      event="delivered", now=now, data={"redemption_id": str(redemption_id),
                                                        "external_id": changed[0], "status": "delivered"})
    SMS_OUTCOMES.labels("delivered").inc()


def claim(redemption_id: uuid.UUID, send: int, now: datetime) -> Claimed | None:
    """Phase 1: decide whether this send may go out now, and render it. None: nothing to do."""
    deadline, in_doubt_window = _settings()
    with transaction() as session:
        db = driver(session)
        db.execute("INSERT INTO sms_messages (redemption_id, send, msisdn, locale, deadline_at, created_at, updated_at)"
                   " SELECT id, %s, msisdn, locale, %s, %s, %s FROM redemptions WHERE id = %s"
                   " ON CONFLICT (redemption_id, send) DO NOTHING", (send, now + deadline, now, now, redemption_id))
        row = session.execute(text(
            "SELECT m.id AS message_id, m.status, m.attempts, m.deadline_at, m.submit_started_at, m.last_error,"
            " r.id AS redemption_id, r.status AS redemption_status, r.program_id, r.offer_id, r.product_id,"
            " r.msisdn, r.locale, r.nominal_minor, r.currency, r.reward_expires_at, r.code_id, r.card_id"
            " FROM sms_messages m JOIN redemptions r ON r.id = m.redemption_id"
            " WHERE m.redemption_id = :r AND m.send = :send FOR UPDATE OF m"),
            {"r": redemption_id, "send": send}).one_or_none()
        if row is None:
            return None  # no such redemption (e.g. the transaction that wrote the job never committed)
        snap = get_snapshot(session)
        if row.status in ("sent", "delivered", "failed", "cancelled"):
            return None  # a duplicate job: this send is settled
        if row.redemption_status == "cancelled":
            db.execute("UPDATE sms_messages SET status = 'cancelled', updated_at = %s WHERE id = %s",
                       (now, row.message_id))
            return None
        if row.status == "submitting":
            waited = now - row.submit_started_at
            if waited < in_doubt_window:
                remaining = int((in_doubt_window - waited).total_seconds() * 1000)
                raise RetryLater("a previous attempt may have reached the provider", max(1000, remaining))
            log.warning("sms_in_doubt_expired", redemption_id=str(redemption_id), send=send)
        if now >= row.deadline_at:
            _fail(db, message_id=row.message_id, redemption_id=row.redemption_id, now=now, snap=snap,
                  reason=f"undelivered by the deadline: {row.last_error or 'no provider took it'}")
            return None
        program = snap.programs_by_id[row.program_id]
        kind, fields = _fields(session, row, snap, row.locale)
        rendered = render(program.templates, kind, row.locale, fields)
        db.execute("UPDATE sms_messages SET status = 'submitting', attempts = attempts + 1, submit_started_at = %s,"
                   " encoding = %s, segments = %s, locale = %s, updated_at = %s, receipts = '{}' WHERE id = %s",
                   (now, rendered.encoding, rendered.segments, rendered.locale, now, row.message_id))
    return Claimed(row.message_id, OutgoingSms(reference=f"{redemption_id}:{send}", to=row.msisdn,
                                               sender=program.sms_sender, text=rendered.text,
                                               encoding=rendered.encoding, segments=rendered.segments))


def deliver(redemption_id: uuid.UUID, send: int, *, provider: Provider | None = None,
            now: datetime | None = None) -> str:
    """Runs once per job delivery; safe to run again for the same (redemption, send)."""
    now = now or datetime.now(timezone.utc)
    claimed = claim(redemption_id, send, now)
    if claimed is None:
        return "nothing to do"
    provider = provider or get_provider()
    checkpoint("deliver.before_submit")
    try:
        ids = provider.submit(claimed.sms)
    except TransientSmsError as exc:
        with transaction() as session:  # it was not taken: back to pending, and retry with backoff
            driver(session).execute("UPDATE sms_messages SET status = 'pending', last_error = %s, updated_at = %s"
                                    " WHERE id = %s", (str(exc), now, claimed.message_id))
        SMS_OUTCOMES.labels("transient").inc()
        raise
    except PermanentSmsError as exc:
        with transaction() as session:
            db = driver(session)
            _fail(db, message_id=claimed.message_id, redemption_id=redemption_id,
                  reason=f"permanent provider error: {exc}", now=now, snap=get_snapshot(session))
        return "failed"
    except InDoubtSmsError as exc:
        # It may have been taken: leave it `submitting`; a receipt settles it, else a resend after the window.
        with transaction() as session:
            driver(session).execute("UPDATE sms_messages SET last_error = %s, updated_at = %s WHERE id = %s",
                                    (str(exc), now, claimed.message_id))
        SMS_OUTCOMES.labels("in_doubt").inc()
        raise RetryLater(str(exc), int(_settings()[1].total_seconds() * 1000)) from None
    checkpoint("deliver.after_submit")
    with transaction() as session:
        _mark_sent(driver(session), message_id=claimed.message_id, redemption_id=redemption_id,
                   provider=provider.name, ids=ids, now=datetime.now(timezone.utc), snap=get_snapshot(session))
    return "sent"


def apply_receipt(provider: str, message_id: str, state: str, destination: str | None = None,
                  now: datetime | None = None) -> bool:
    """A delivery receipt: final states settle the message and the redemption. An unknown id for a
    destination with an in-doubt message settles that message (it did reach the provider)."""
    now = now or datetime.now(timezone.utc)
    with transaction() as session:
        db = driver(session)
        snap = get_snapshot(session)
        row = db.execute("SELECT id, redemption_id, status, provider_message_ids, receipts FROM sms_messages"
                         " WHERE provider_message_ids @> ARRAY[%s]::varchar[] FOR UPDATE", (message_id,)).fetchone()
        if row is None and destination:
            msisdn = destination if destination.startswith("+") else "+" + destination
            in_doubt = db.execute("SELECT id, redemption_id, submit_started_at, segments, receipts FROM sms_messages"
                                  " WHERE status = 'submitting' AND msisdn = %s ORDER BY submit_started_at"
                                  " LIMIT 1 FOR UPDATE", (msisdn,)).fetchone()
            if in_doubt is not None and now - in_doubt[2] < SUBMIT_GRACE:
                raise ReceiptTooEarly(f"the submit of message {message_id} is still being recorded")
            if in_doubt is not None:
                # The attempt did reach the provider, but maybe not whole: a worker can die between the
                # parts of a long SMS. Only receipts for every part settle it; otherwise it is resent.
                seen = {**(in_doubt[4] or {}), message_id: state}
                if len(seen) < (in_doubt[3] or 1):
                    db.execute("UPDATE sms_messages SET receipts = %s, updated_at = %s WHERE id = %s",
                               (json.dumps(seen), now, in_doubt[0]))
                    return True
                log.info("sms_in_doubt_settled_by_receipt", redemption_id=str(in_doubt[1]))
                _mark_sent(db, message_id=in_doubt[0], redemption_id=in_doubt[1], provider=provider,
                           ids=sorted(seen), now=now, snap=snap)
                db.execute("UPDATE sms_messages SET receipts = %s WHERE id = %s", (json.dumps(seen), in_doubt[0]))
                row = db.execute("SELECT id, redemption_id, status, provider_message_ids, receipts FROM sms_messages"
                                 " WHERE id = %s", (in_doubt[0],)).fetchone()
                sms_id, redemption_id, status, ids, receipts = row
                if status == "sent" and all(receipts.get(i) in DELIVERED_STATES for i in ids):
                    _delivered(db, sms_id=sms_id, redemption_id=redemption_id, now=now, snap=snap)
                elif status == "sent" and any(receipts.get(i) in FAILED_STATES for i in ids):
                    _fail(db, message_id=sms_id, redemption_id=redemption_id, now=now, snap=snap,
                          reason="undeliverable: " + next(receipts[i] for i in ids if receipts.get(i) in FAILED_STATES))
                return True
        if row is None:
            # Usually the receipt overtook the commit of its own submit; the provider offers it again.
            raise ReceiptTooEarly(f"no message {message_id} (yet)")
        sms_id, redemption_id, status, ids, receipts = row
        receipts = {**(receipts or {}), message_id: state}
        db.execute("UPDATE sms_messages SET receipts = %s, updated_at = %s WHERE id = %s",
                   (json.dumps(receipts), now, sms_id))
        if status != "sent":
            return True
        if state in FAILED_STATES:
            _fail(db, message_id=sms_id, redemption_id=redemption_id, now=now, snap=snap,
                  reason=f"undeliverable: {state}")
        elif all(receipts.get(i) in DELIVERED_STATES for i in ids):
            _delivered(db, sms_id=sms_id, redemption_id=redemption_id, now=now, snap=snap)
    return True


def apply_smpp_receipt(receipt: Receipt) -> None:
    apply_receipt("smpp", receipt.message_id, receipt.state, receipt.destination)
