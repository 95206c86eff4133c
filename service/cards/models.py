from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Integer, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base


class Card(Base):
    """The number is looked up by its HMAC fingerprint and kept AES-GCM encrypted, like the PIN."""
    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint("balance_minor >= 0 AND balance_minor <= nominal_minor", name="balance_in_range"),
        CheckConstraint("status IN ('active', 'exhausted', 'expired', 'blocked', 'cancelled')", name="status"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    number_fingerprint: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    last4: Mapped[str] = mapped_column(String(4))
    pin_enc: Mapped[bytes] = mapped_column(LargeBinary)
    currency: Mapped[str] = mapped_column(String(3))
    nominal_minor: Mapped[int] = mapped_column(BigInteger)
    balance_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failed_pin_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
