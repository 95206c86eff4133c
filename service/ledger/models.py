from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, LargeBinary, String, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base

RECORD_TYPES = ("issue", "cancel", "exchange", "breakage")


class ReconciliationRecord(Base):
    """One accounting line, written in the same transaction as its business event and never changed:
    corrections are new records with opposite signs (`quantity` -1 and negated amounts)."""
    __tablename__ = "reconciliation_records"
    __table_args__ = (
        CheckConstraint("type IN ('issue', 'cancel', 'exchange', 'breakage')", name="type"),
        CheckConstraint("quantity IN (-1, 1)", name="quantity"),
        Index("ix_records_program_time", "program_id", "occurred_at"),
        Index("ix_records_redemption", "redemption_id"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    program_id: Mapped[int | None] = mapped_column(ForeignKey("programs.id"))
    tariff_id: Mapped[int | None] = mapped_column(ForeignKey("tariffs.id"))
    offer_id: Mapped[int | None] = mapped_column(ForeignKey("offers.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    sku: Mapped[str] = mapped_column(String(64))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    face_value_minor: Mapped[int] = mapped_column(BigInteger)
    cost_minor: Mapped[int] = mapped_column(BigInteger)
    vat_rate_bp: Mapped[int] = mapped_column(Integer)
    vat_minor: Mapped[int] = mapped_column(BigInteger)
    code_fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary)
    code_last4: Mapped[str | None] = mapped_column(String(4))
    redemption_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), ForeignKey("redemptions.id"))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
