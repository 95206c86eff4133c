"""The expiry reminder (a program's `expiry_reminder`, off by default): one SMS with the reward page's
link, 30 days before a card that still has a balance expires. Run by the housekeeping every minute,
a small batch at a time; only for programs outside their quiet hours now, and the SMS goes on the
bulk queue, whose worker waits out quiet hours again if the window has opened meanwhile."""

from __future__ import annotations

import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from psycopg.rows import class_row
from sqlalchemy.orm import Session

from service.catalog.snapshot import ProgramInfo, get_snapshot
from service.delivery.notices import queue_notice
from service.holders import texts
from service.kit.db.engine import driver
from service.kit.security.crypto import get_vault
from service.kit.security.links import link_of
from service.kit.values.quiet_hours import quiet_hours

log = structlog.get_logger("holders")
REMIND_BEFORE = timedelta(days=30)
BATCH = 200


@dataclass(frozen=True)
class _Due:
    card_id: int
    balance_minor: int
    currency: str
    expires_at: datetime
    product_id: int
    redemption_id: uuid.UUID
    program_id: int
    msisdn: str
    locale: str


def _open_now(program: ProgramInfo, now: datetime) -> bool:
    window = quiet_hours(program.quiet_hours)
    return window is None or window.next_allowed(now, program.zone) == now


def reminder_text(program: ProgramInfo, locale: str, fields: dict[str, str]) -> str:
    """The program's expiry_reminder template in the locale (ru when it has none), else ours."""
    by_locale = program.templates.get("expiry_reminder") or {}
    template = by_locale.get(locale) or by_locale.get("ru")
    if template:
        return string.Formatter().vformat(template, (), fields)
    return texts.sms_text(locale, "reminder", **fields)


def remind_expiring_cards(session: Session, now: datetime, *, limit: int = BATCH) -> int:
    """Queues the reminders that are due now (at most `limit`); returns how many. Each card is reminded
    once (`cards.reminded_at`); cards being exchanged right now are skipped and come next time."""
    snap = get_snapshot(session)
    programs = [
        p.id for p in snap.programs_by_id.values() if p.active and p.expiry_reminder and _open_now(p, now)
    ]
    if not programs:
        return 0
    db = driver(session)
    due = (
        db.cursor(row_factory=class_row(_Due))
        .execute(
            "SELECT c.id AS card_id, c.balance_minor, c.currency, c.expires_at, c.product_id,"
            " r.id AS redemption_id, r.program_id, r.msisdn, r.locale"
            " FROM cards c JOIN redemptions r ON r.card_id = c.id"
            " WHERE c.status = 'active' AND c.expires_at > %(now)s AND c.expires_at <= %(until)s"
            " AND c.balance_minor > 0 AND c.reminded_at IS NULL AND NOT c.sandbox"
            " AND r.program_id = ANY(%(programs)s) AND r.link_hash IS NOT NULL"
            " ORDER BY c.expires_at LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED",
            {"now": now, "until": now + REMIND_BEFORE, "programs": programs, "limit": limit},
        )
        .fetchall()
    )
    vault = get_vault()
    for card in due:
        program = snap.programs_by_id[card.program_id]
        product = snap.products[card.product_id]
        fields = {
            "program": program.name,
            "brand": product.brand or product.name,
            "nominal": texts.format_money(card.balance_minor, card.currency).replace(texts.NBSP, " "),
            "expires": texts.format_date(card.expires_at, program.zone),
            "link": link_of(vault, card.redemption_id) or "",
        }
        queue_notice(
            db,
            redemption_id=card.redemption_id,
            program_id=program.id,
            kind="reminder",
            msisdn=card.msisdn,
            sender=program.sms_sender,
            locale=card.locale,
            text=reminder_text(program, card.locale, fields),
            now=now,
        )
    if due:
        db.execute(
            "UPDATE cards SET reminded_at = %(now)s WHERE id = ANY(%(ids)s)",
            {"now": now, "ids": [card.card_id for card in due]},
        )
        log.info("expiry_reminders_queued", count=len(due))
    return len(due)
