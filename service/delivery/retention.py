"""The retention of delivered SMS (issue 28): once a message is delivered no receipt is waited for,
so its provider ids (`sms_provider_messages`, the receipts' lookup) go after RETENTION_DAYS. The
message itself stays: it is the redemption's history (the SMS attempts in the API)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row

from service.kit.db.retention import read_mark, write_mark

MARK = "sms_provider_messages"

# Delivered messages done before the cutoff, after the mark, in their order (ix_sms_delivered_done):
# each walk reads only the batch, however many messages were handled before.
_BATCH = (
    "SELECT id, done_at FROM sms_messages WHERE status = 'delivered' AND done_at < %(before)s"
    " AND (done_at, id) > (%(at)s, %(id)s) ORDER BY done_at, id LIMIT %(limit)s"
)


@dataclass(frozen=True)
class _Delivered:
    id: int
    done_at: datetime


def purge_delivered_provider_ids(db: Connection[Any], *, before: datetime, limit: int) -> int:
    """Deletes the provider ids of up to `limit` messages delivered before `before`; returns the
    number of messages handled (their ids are gone, the messages stay)."""
    at, last = read_mark(db, MARK)
    rows = (
        db.cursor(row_factory=class_row(_Delivered))
        .execute(_BATCH, {"before": before, "at": at, "id": last, "limit": limit})
        .fetchall()
    )
    if not rows:
        return 0
    db.execute(
        "DELETE FROM sms_provider_messages WHERE sms_message_id = ANY(%(ids)s)",
        {"ids": [row.id for row in rows]},
    )
    write_mark(db, MARK, rows[-1].done_at, rows[-1].id)
    return len(rows)
