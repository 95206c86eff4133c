"""A redemption's SMS as the API shows them: every send (the first and each resend) with its
provider, status, parts, submissions, times, receipt and last error. One indexed query for any
number of redemptions (the unique index on sms_messages (redemption_id, send))."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row

from service.delivery.service import DELIVERED_STATES, FAILED_STATES


@dataclass(frozen=True)
class SmsAttempt:
    redemption_id: uuid.UUID
    send: int
    provider: str | None
    status: str
    segments: int | None
    attempts: int
    submitted_at: datetime | None
    sent_at: datetime | None
    receipt_at: datetime | None
    receipts: dict[str, str]
    error_code: str | None
    error: str | None

    @property
    def receipt_state(self) -> str | None:
        """The state the receipts give the whole SMS: a failed part's, else DELIVRD once every part
        is delivered, else the latest part's (ENROUTE, ACCEPTD, ...); None before any receipt."""
        states = list(self.receipts.values())
        if not states:
            return None
        failed = next((s for s in states if s in FAILED_STATES), None)
        if failed:
            return failed
        if self.status == "delivered" and all(s in DELIVERED_STATES for s in states):
            return "DELIVRD"
        return states[-1]


SMS_ATTEMPTS = (
    "SELECT redemption_id, send, provider, status, segments, attempts, submit_started_at AS submitted_at,"
    " sent_at, receipt_at, receipts, error_code, last_error AS error FROM sms_messages"
    " WHERE redemption_id = ANY(%(ids)s) ORDER BY redemption_id, send"
)


def sms_attempts(db: Connection[Any], redemption_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[SmsAttempt]]:
    """The SMS of each redemption, in send order."""
    found: dict[uuid.UUID, list[SmsAttempt]] = defaultdict(list)
    if not redemption_ids:
        return found
    cursor = db.cursor(row_factory=class_row(SmsAttempt))
    for attempt in cursor.execute(SMS_ATTEMPTS, {"ids": redemption_ids}):
        found[attempt.redemption_id].append(attempt)
    return found
