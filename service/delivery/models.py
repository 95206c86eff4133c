from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.base import Base

SMS_STATUSES = ("pending", "submitting", "sent", "delivered", "failed", "cancelled")


class SmsMessage(Base):
    """One SMS of a redemption: `send` 0 is the first, 1..3 are resends. The row is the idempotency
    record of the send: a redelivered job finds it and never submits a second time.

    `submitting` means an attempt was handed to the provider and its outcome was not recorded (the
    worker died in between): such a message is in doubt, and is settled by the provider's receipt
    (matched by destination) or, failing that, resent after a waiting window."""

    __tablename__ = "sms_messages"
    __table_args__ = (
        UniqueConstraint("redemption_id", "send"),
        CheckConstraint(
            "status IN ('pending', 'submitting', 'sent', 'delivered', 'failed', 'cancelled')", name="status"
        ),
        Index("ix_sms_in_doubt", "msisdn", postgresql_where=text("status = 'submitting'")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    redemption_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("redemptions.id"))
    send: Mapped[int] = mapped_column(Integer)
    msisdn: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    provider: Mapped[str | None] = mapped_column(String(16))
    provider_message_ids: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    receipts: Mapped[dict] = mapped_column(JSONB, server_default="{}")
    encoding: Mapped[str | None] = mapped_column(String(8))
    segments: Mapped[int | None] = mapped_column(Integer)
    locale: Mapped[str | None] = mapped_column(String(2))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    submit_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SmsProviderMessage(Base):
    """A part of an SMS under the id its provider gave it: receipts name parts by that id.

    A btree table, not a GIN index over `sms_messages.provider_message_ids`: for `ids && $1` the
    planner guesses a selectivity from the number of ids asked for (half a percent each), so a batch
    of a hundred receipts looked like a third of the table and was answered with a scan of all of
    it, at any size. Providers may recycle their ids: one id can name parts of several messages,
    and a receipt belongs to the newest.

    A trigger of migration 0005 fills it from `sms_messages.provider_message_ids`, whoever writes
    them (workers of the previous release, during a rolling upgrade, do not know this table)."""

    __tablename__ = "sms_provider_messages"
    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    provider_message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sms_message_id: Mapped[int] = mapped_column(ForeignKey("sms_messages.id"), primary_key=True)


class WebhookEvent(Base):
    """An event for the program's webhook endpoint; consumers dedupe by `id`."""

    __tablename__ = "webhook_events"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    redemption_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("redemptions.id"))
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    given_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("webhook_events.id"))
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
