"""Transactional outbox: work for the workers is written in the same transaction as the business
change that causes it, and a relay publishes it to Dramatiq after commit. A rolled-back transaction
leaves no message; a committed one leaves a row the relay (workers/relay.py) will publish (at least
once)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

from psycopg import Connection, sql
from sqlalchemy import BigInteger, DateTime, Index, Integer, String, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base
from service.kit.messaging.jobs import Job
from service.kit.messaging.sql import compose
from service.kit.observability import tracing
from service.kit.values.ids import uuid7


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
        # Retention: published rows, oldest first (migration 0022).
        Index("ix_outbox_published", "published_at", postgresql_where=text("published_at IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True, default=uuid7)
    queue: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    publish_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # W3C traceparent of the operation that wrote the row, when tracing is on: the relay carries it
    # into the Dramatiq message, so a trace crosses the outbox (service/kit/observability/tracing.py).
    trace_parent: Mapped[str | None] = mapped_column(String(55))


def insert(
    job: Job,
    *,
    payload: str,
    source: str,
    message_id: str = "uuid7()",
    created_at: str = "%(outbox_now)s",
    order_by: str | None = None,
) -> str:
    """The one writer of outbox rows: an INSERT of one row of `job` per row of `source` (a table
    expression, e.g. a CTE of the caller's statement), with the JSON `payload` expression. The row's
    time is the `created_at` expression (by default the parameter `outbox_now`); the caller adds
    `trace_params()` to its parameters. With tracing off the statement is the same as before tracing
    existed. The message id is time-ordered (uuid7(), migration 0021), so that each insert lands on the
    rightmost leaf of the large unique index on it."""
    return _insert_sql(job, payload, source, message_id, created_at, order_by, tracing.enabled())


@lru_cache
def _insert_sql(
    job: Job, payload: str, source: str, message_id: str, created_at: str, order_by: str | None, traced: bool
) -> str:
    return compose(
        "insert",
        queue=sql.Literal(job.queue).as_string(None),
        actor=sql.Literal(job.actor).as_string(None),
        payload=payload,
        source=source,
        message_id=message_id,
        created_at=created_at,
        order_by=f" ORDER BY {order_by}" if order_by else "",
        trace_column=", trace_parent" if traced else "",
        trace_value=", %(outbox_trace)s" if traced else "",
    )


def trace_params() -> dict[str, Any]:
    """The trace context parameter of `insert` (none while tracing is off)."""
    return {"outbox_trace": tracing.traceparent()} if tracing.enabled() else {}


def enqueue(db: Connection[Any], job: Job, payload: dict[str, Any], *, now: datetime) -> None:
    """One row of `job`, in the caller's transaction."""
    db.execute(
        insert(job, payload="CAST(%(outbox_payload)s AS jsonb)", source="(VALUES (1)) AS one"),
        {"outbox_payload": json.dumps(payload), "outbox_now": now, **trace_params()},
    )


def purge_published(db: Connection[Any], *, before: datetime, limit: int) -> int:
    """Deletes up to `limit` rows published before `before`, oldest first (rows another pod's batch
    holds are skipped); unpublished rows stay."""
    return int(
        db.execute(
            "DELETE FROM outbox WHERE id = ANY(ARRAY(SELECT id FROM outbox WHERE published_at < %(before)s"
            " ORDER BY published_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED))",
            {"before": before, "limit": limit},
        ).rowcount
    )
