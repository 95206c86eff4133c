from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base

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
        # The sandbox's messages still waiting for their receipt: the housekeeping reads these every
        # minute, and they are few, whatever the size of the table.
        Index(
            "ix_sms_sandbox_unsettled",
            "sent_at",
            postgresql_where=text("provider = 'sandbox' AND status = 'sent'"),
        ),
        # Retention: delivered messages in the order they were done (migration 0022).
        Index("ix_sms_delivered_done", "done_at", "id", postgresql_where=text("status = 'delivered'")),
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
    # A long SMS: per part the provider's id once it took it (NULL: still to send), the UDH reference
    # every attempt keeps, and the digest of the text they belong to (migration 0016_smpp_parts).
    part_ids: Mapped[list[str | None] | None] = mapped_column(ARRAY(String(64)))
    udh_reference: Mapped[int | None] = mapped_column(SmallInteger)
    text_digest: Mapped[str | None] = mapped_column(String(32))
    failures: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))  # errors per class
    error_code: Mapped[str | None] = mapped_column(String(32))  # the provider's: "0x58", "http 503", ...
    receipt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the last receipt
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
    # A message's parts, for the retention of delivered messages (migration 0022).
    __table_args__ = (Index("ix_sms_provider_messages_sms", "sms_message_id"),)
    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    provider_message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sms_message_id: Mapped[int] = mapped_column(ForeignKey("sms_messages.id"), primary_key=True)


NOTICE_KINDS = ("otp", "certificate", "reminder")
NOTICE_STATUSES = ("pending", "submitting", "sent", "delivered", "failed")


class SmsNotice(Base):
    """An SMS to a holder that is not the reward itself: a one-time code and a certificate from the
    reward page (transactional, the reward SMS's queue) or an expiry reminder (bulk, in the program's
    quiet hours it waits). The text carries a code, so it is kept encrypted (AES-GCM, `key_id`).

    Submitted at most once: `submitting` whose outcome was never recorded is in doubt and is not
    sent again (a one-time code is asked for again, a certificate stays on the page)."""

    __tablename__ = "sms_notices"
    __table_args__ = (
        CheckConstraint("kind IN ('otp', 'certificate', 'reminder')", name="kind"),
        CheckConstraint("status IN ('pending', 'submitting', 'sent', 'delivered', 'failed')", name="status"),
        Index("ix_sms_notices_redemption", "redemption_id", "created_at"),
        # Receipts look for a notice among the recent ones when no reward SMS has their id.
        Index("ix_sms_notices_sent", "sent_at", postgresql_where=text("status = 'sent'")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    redemption_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("redemptions.id"))
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    kind: Mapped[str] = mapped_column(String(16))
    bulk: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    msisdn: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str] = mapped_column(String(11))
    locale: Mapped[str] = mapped_column(String(2))
    text_enc: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    provider: Mapped[str | None] = mapped_column(String(16))
    provider_message_ids: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    encoding: Mapped[str | None] = mapped_column(String(8))
    segments: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookEvent(Base):
    """An event for the program's webhook endpoint; consumers dedupe by `id`. Its status is read from
    the timestamps: pending (neither), delivered, given up (retried for 24 hours from `deliver_from`
    in vain). A replay sends it again under the same id, with a new 24-hour window."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        # The events API lists newest first, per program or across all of them.
        Index("ix_webhook_events_program_created", "program_id", "created_at", "id"),
        Index("ix_webhook_events_created", "created_at", "id"),
        # Given-up events are few: listed, counted (a gauge) and replayed through this index.
        Index(
            "ix_webhook_events_given_up",
            "created_at",
            postgresql_where=text("given_up_at IS NOT NULL AND delivered_at IS NULL"),
        ),
        # A sandbox key lists only its own world's events: few beside the real ones, so a partial index.
        Index(
            "ix_webhook_events_sandbox_program_created",
            "program_id",
            "created_at",
            "id",
            postgresql_where=text("sandbox"),
        ),
    )
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    # An event of the sandbox world (a sandbox key's redemption or card): only sandbox keys and staff
    # see it; real keys never do, and a sandbox key sees nothing else (docs/integration.md, Sandbox).
    sandbox: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Redemption events name their redemption; card, stock, budget and period events none.
    redemption_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("redemptions.id"))
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    given_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The retry window (24 hours) counts from here: NULL is created_at; a replay moves it to its time.
    deliver_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replays: Mapped[int] = mapped_column(Integer, server_default="0")


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_event", "event_id", "attempted_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("webhook_events.id"))
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # After a failed attempt: when the next one is due (none after a delivery or the give-up).
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProgramWebhookSecret(Base):
    """A program's webhook signing secrets, encrypted under the key `key_id`. The newest is current;
    an older one whose `expires_at` is still ahead is in its overlap window after a rotation, and
    events carry a signature by each (Standard Webhooks allows several)."""

    __tablename__ = "program_webhook_secrets"
    __table_args__ = (Index("ix_program_webhook_secrets_program", "program_id", "created_at"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
