"""Staff accounts (people, not API keys), their sign-in sessions, and the append-only audit log of
what they did in the console."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base

STAFF_ROLES = ("support", "finance", "partner", "admin", "approver")


class StaffAccount(Base):
    """A person who signs in to the console. The password is an argon2id hash; wrong passwords are
    counted per e-mail and place in auth_throttle (service/console/accounts.py)."""

    __tablename__ = "staff_accounts"
    __table_args__ = (
        CheckConstraint("role IN ('support', 'finance', 'partner', 'admin', 'approver')", name="role"),
        CheckConstraint("(role = 'partner') = (partner_code IS NOT NULL)", name="partner_scoped"),
        CheckConstraint("role = 'support' OR cardinality(programs) = 0", name="program_scoped"),
        CheckConstraint("email = lower(email)", name="email_lower"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    programs: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    partner_code: Mapped[str | None] = mapped_column(String(64))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    password_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StaffSignInPlace(Base):
    """Where an account signed in from (its address; IPv6 by its /64), keyed like the throttle's
    counts by a hash of the e-mail: from these places the right password is not held back by wrong
    passwords tried elsewhere."""

    __tablename__ = "staff_sign_in_places"
    target: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    client: Mapped[str] = mapped_column(String(80), primary_key=True)
    last_signed_in_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StaffSession(Base):
    """A signed-in browser. Only a SHA-256 of the cookie's token is stored (the token is 256-bit
    random); the CSRF token is per session."""

    __tablename__ = "staff_sessions"
    __table_args__ = (Index("ix_staff_sessions_account", "staff_account_id"),)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    staff_account_id: Mapped[int] = mapped_column(ForeignKey("staff_accounts.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StaffAuditEntry(Base):
    """One thing a person did (or tried) in the console: who, when, what, on what, from where, and
    how it ended (`ok` or the refusal's problem code). Written in the same transaction as the action
    when it succeeds; a trigger of migration 0007 refuses UPDATE and DELETE.

    `action_key` is the form's one-time key: a second submission of the same form finds its row
    and does nothing again (a double click on "exchange" takes one certificate)."""

    __tablename__ = "staff_audit_log"
    __table_args__ = (
        Index("ix_staff_audit_at", "at"),
        Index(
            "uq_staff_audit_action_key",
            "staff_account_id",
            "action_key",
            unique=True,
            postgresql_where=text("action_key IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    staff_account_id: Mapped[int | None] = mapped_column(ForeignKey("staff_accounts.id"))
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict] = mapped_column(JSONB, server_default="{}")
    address: Mapped[str | None] = mapped_column(String(64))
    action_key: Mapped[str | None] = mapped_column(String(64))
