from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base

ROLES = ("loyalty", "partner", "finance", "support", "admin", "approver")


class ApiKey(Base):
    """`key_id` is the public half of the key (shown in lists and logs); only a SHA-256 of the secret
    half is stored: keys are 256-bit random, so a slow hash would add latency and no safety."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "role IN ('loyalty', 'partner', 'finance', 'support', 'admin', 'approver')", name="role"
        ),
        CheckConstraint("role <> 'partner' OR partner_code IS NOT NULL", name="partner_scoped"),
        CheckConstraint("role <> 'loyalty' OR cardinality(programs) > 0", name="loyalty_scoped"),
        CheckConstraint("NOT sandbox OR role = 'loyalty'", name="sandbox_loyalty"),
        CheckConstraint("role <> 'approver' OR owner_staff_id IS NOT NULL", name="approver_owned"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    programs: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    partner_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A sandbox key's redemptions use sandbox rewards and leave no trace in stock, budget or finance.
    sandbox: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # The staff member who holds the key (required for approver keys): the one person behind the key
    # and the console account, for maker-checker. A foreign key by table name: auth sits below the
    # console, whose accounts these are.
    owner_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_accounts.id"))
