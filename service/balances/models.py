from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, String, func
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base


class BalanceAlert(Base):
    """Whether a balance is below its threshold, as last seen: a `stock.low` or `budget.low` event goes
    out when this flips to low, in the transaction that flips it, so workers checking at the same time
    agree on who sends it (one UPDATE wins). `subject` is a sku or a program code; `period` is the
    budget's month (YYYY-MM), empty for stock."""

    __tablename__ = "balance_alerts"
    __table_args__ = (CheckConstraint("kind IN ('stock', 'budget')", name="kind"),)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True, server_default="")
    low: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
