from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base

STATUSES = ("accepted", "sent", "delivered", "failed", "cancelled")


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (
        CheckConstraint("status IN ('accepted', 'sent', 'delivered', 'failed', 'cancelled')", name="status"),
        # A sandbox code reward is drawn from no pool (migration 0012): it has neither code nor card.
        CheckConstraint(
            "(code_id IS NULL) <> (card_id IS NULL) OR (sandbox AND code_id IS NULL)", name="one_reward"
        ),
        # A sandbox order id never blocks a real one.
        UniqueConstraint("program_id", "sandbox", "external_id"),
        # A code belongs to at most one live redemption (invariant 1), enforced by the database too;
        # a cancelled redemption's code never left, went back to the pool and may be issued again.
        Index(
            "uq_redemptions_live_code", "code_id", unique=True, postgresql_where=text("status <> 'cancelled'")
        ),
        Index("ix_redemptions_limits", "msisdn", "offer_id", "created_at"),
        Index("ix_redemptions_program_id", "program_id", "id"),
        Index("ix_redemptions_card", "card_id", postgresql_where=text("card_id IS NOT NULL")),
        # A sandbox key's month figures sum its world's redemptions (GET /v1/programs/{program}).
        Index("ix_redemptions_sandbox_month", "program_id", "created_at", postgresql_where=text("sandbox")),
        # The reward page's link: /r/<token> is found by sha256(token) (migration 0017_holders).
        Index("uq_redemptions_link_hash", "link_hash", unique=True),
    )
    # Time-ordered UUIDs (v7 layout): ids sort by creation, so they double as pagination keys.
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    tariff_id: Mapped[int] = mapped_column(ForeignKey("tariffs.id"))
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    external_id: Mapped[str] = mapped_column(String(128))
    msisdn: Mapped[str] = mapped_column(String(16))
    locale: Mapped[str] = mapped_column(String(2))
    points: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    nominal_minor: Mapped[int] = mapped_column(BigInteger)
    code_id: Mapped[int | None] = mapped_column(ForeignKey("codes.id"))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    reward_last4: Mapped[str] = mapped_column(String(4))
    reward_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), server_default="accepted")
    status_reason: Mapped[str | None] = mapped_column(Text)
    resend_count: Mapped[int] = mapped_column(Integer, server_default="0")
    first_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    sandbox: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # sha256 of the reward page's token (service/kit/security/links.py); NULL: issued before the pages.
    link_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    # When the holder first tapped "show" on the reward page: the code is exposed, as by a sent SMS.
    revealed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A campaign's grant (service/campaigns): no points debited, its SMS on the bulk channel.
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("campaigns.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BudgetUsage(Base):
    """Spent nominal per program and month (program time zone): one row, updated atomically."""

    __tablename__ = "program_budget_usage"
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    spent_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")


class IdempotencyKey(Base):
    """Stripe's replay rules: the first response of a key is stored with it and replayed."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
