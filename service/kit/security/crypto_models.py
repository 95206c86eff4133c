from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base


class VaultKey(Base):
    """Keys the service keeps for itself, wrapped (AES-GCM) by the encryption key `key_id`: the
    fingerprint key, which must never change (fingerprints dedupe codes, find cards and stand in the
    append-only ledger), so it is made once and re-wrapped, not replaced, by a key rotation."""

    __tablename__ = "vault_keys"
    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16))
    key_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
