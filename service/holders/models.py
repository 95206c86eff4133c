"""What the reward pages record: what a holder did there (the console's timeline), and the one-time
codes of online exchanges."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base

HOLDER_EVENTS = ("code_shown", "certificate_shown", "otp_sent", "otp_wrong", "exchanged")


class HolderEvent(Base):
    """One thing a holder did on the reward page: showed the code or a certificate, was sent a
    one-time code, typed a wrong one, exchanged the card online."""

    __tablename__ = "holder_events"
    __table_args__ = (
        CheckConstraint(
            "event IN ('code_shown', 'certificate_shown', 'otp_sent', 'otp_wrong', 'exchanged')", name="event"
        ),
        Index("ix_holder_events_redemption", "redemption_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    redemption_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("redemptions.id"))
    event: Mapped[str] = mapped_column(String(24))
    exchange_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("exchanges.id"))
    sku: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HolderOtp(Base):
    """A one-time code for an online exchange: bound to the card, the certificate and its amount (all
    inside the HMAC `code_hash`), valid until `expires_at`, `attempts` wrong tries of 3, used once
    (`exchange_id`: what it confirmed, so a second submit shows the same exchange)."""

    __tablename__ = "holder_otps"
    __table_args__ = (Index("ix_holder_otps_card", "card_id", "created_at"),)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exchange_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("exchanges.id"))
