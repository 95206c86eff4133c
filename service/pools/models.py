from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
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
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base

CODE_STATUSES = ("available", "reserved", "issued", "voided")


class CodeUpload(Base):
    __tablename__ = "code_uploads"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    source: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    lines: Mapped[int] = mapped_column(Integer)
    accepted: Mapped[int] = mapped_column(Integer)
    duplicates: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Code(Base):
    """A partner code. Never stored in clear: `code_enc`/`pin_enc` are AES-GCM, `fingerprint` is an
    HMAC of the normalised code, unique per partner, so a code cannot enter a pool twice (invariant 1)."""

    __tablename__ = "codes"
    __table_args__ = (
        UniqueConstraint("partner_id", "fingerprint"),
        CheckConstraint("status IN ('available', 'reserved', 'issued', 'voided')", name="status"),
        # Allocation reads this index in order: earliest expiry first, never-expiring last; expired
        # codes sit before the range the query starts at, so they are never scanned again. Each take
        # leaves a dead entry at its head until VACUUM: migration 0023 has autovacuum come after a
        # fixed number of takes (storage parameters of the table, not of the model).
        Index(
            "ix_codes_allocation",
            "product_id",
            text("coalesce(expires_at, 'infinity')"),
            "id",
            postgresql_where=text("status = 'available'"),
            # expires_at itself too, so the console's dashboard counts a pool from the index alone
            # (PostgreSQL plans an index-only scan of an expression only when its column is there).
            postgresql_include=["expires_at"],
        ),
        # Codes that left their pool, by when (the console's stock runway: the last 7 days' pace).
        Index(
            "ix_codes_taken",
            "product_id",
            "status_changed_at",
            postgresql_where=text("status IN ('reserved', 'issued')"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    partner_id: Mapped[int] = mapped_column(ForeignKey("partners.id"))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    last4: Mapped[str] = mapped_column(String(4))
    code_enc: Mapped[bytes] = mapped_column(LargeBinary)
    pin_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The key of code_enc and pin_enc (service/kit/security/crypto.py); NULL: written before key ids.
    key_id: Mapped[str | None] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), server_default="available")
    upload_id: Mapped[int | None] = mapped_column(ForeignKey("code_uploads.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
