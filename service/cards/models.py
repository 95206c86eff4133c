from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base


class Card(Base):
    """The number is looked up by its HMAC fingerprint and kept AES-GCM encrypted, like the PIN."""

    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint("balance_minor >= 0 AND balance_minor <= nominal_minor", name="balance_in_range"),
        CheckConstraint(
            "status IN ('active', 'exhausted', 'expired', 'blocked', 'cancelled')", name="status"
        ),
        # The expiry job reads only the active cards, in expiry order.
        Index("ix_cards_expiry", "expires_at", postgresql_where=text("status = 'active'")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    number_fingerprint: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    last4: Mapped[str] = mapped_column(String(4))
    pin_enc: Mapped[bytes] = mapped_column(LargeBinary)
    # The key of number_enc and pin_enc (service/kit/security/crypto.py); NULL: written before key ids.
    key_id: Mapped[str | None] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    nominal_minor: Mapped[int] = mapped_column(BigInteger)
    balance_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Wrong PINs are counted per number and per client in auth_throttle (service/cards/lockout.py).
    # Minted for a sandbox key's redemption: unknown to partners, never expired into breakage.
    sandbox: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # When the expiry reminder SMS was queued (one per card; service/holders/reminders.py).
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


EXCHANGE_CHANNELS = ("partner", "online")


class Exchange(Base):
    """Part of a card's balance turned into one of a partner's certificates (one pooled code): at the
    partner's desk (channel `partner`) or by the holder on the reward page (channel `online`)."""

    __tablename__ = "exchanges"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("channel IN ('partner', 'online')", name="channel"),
        Index("ix_exchanges_card", "card_id"),
        Index("ix_exchanges_partner_time", "partner_id", "created_at"),
    )
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    code_id: Mapped[int] = mapped_column(ForeignKey("codes.id"), unique=True)  # invariant 1
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    channel: Mapped[str] = mapped_column(String(8), server_default="partner")


CARD_EVENTS = ("blocked", "unblocked", "locked", "unlocked", "expired")


class CardEvent(Base):
    """Audit trail of a card: who blocked or unblocked it and why, PIN lockouts and who lifted them,
    expiry."""

    __tablename__ = "card_events"
    __table_args__ = (
        CheckConstraint("event IN ('blocked', 'unblocked', 'locked', 'unlocked', 'expired')", name="event"),
        Index("ix_card_events_card", "card_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    event: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
