"""State for the console tests, built through the domain functions the API and the workers use:
redemptions through the API, SMS through the delivery function with the file provider, receipts
through the receipt function."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from service.delivery.providers import FileProvider, Receipt
from service.delivery.service import apply_receipts, deliver
from service.kit.db.engine import new_session

PHONE = "87011234567"  # +77011234567


def send_sms(
    redemption_id: str | uuid.UUID,
    folder: Path,
    *,
    send: int = 0,
    state: str | None = "DELIVRD",
    at: datetime | None = None,
    receipt_after: timedelta = timedelta(0),
) -> None:
    """The worker's delivery of one send (at `at`), and the provider's receipt for each of its parts
    `receipt_after` later."""
    rid = uuid.UUID(str(redemption_id))
    deliver(rid, send, provider=FileProvider(folder / "sms.jsonl"), now=at)
    if state is None:
        return
    with new_session() as s:
        ids = s.execute(
            text("SELECT provider_message_ids FROM sms_messages WHERE redemption_id = :r AND send = :s"),
            {"r": rid, "s": send},
        ).scalar_one()
    when = at + receipt_after if at is not None else None
    errors = apply_receipts("file", [Receipt(i, state, None) for i in ids], now=when)
    assert errors == [None] * len(ids)


def sms_rows(redemption_id: str) -> list[tuple[int, str]]:
    with new_session() as s:
        return [
            tuple(row)
            for row in s.execute(
                text("SELECT send, status FROM sms_messages WHERE redemption_id = :r ORDER BY send"),
                {"r": uuid.UUID(redemption_id)},
            )
        ]


def audit_rows() -> list[dict]:
    with new_session() as s:
        return [
            dict(row._mapping)
            for row in s.execute(
                text(
                    "SELECT staff_account_id, email, role, action, target, outcome, details, address"
                    " FROM staff_audit_log ORDER BY id"
                )
            )
        ]
