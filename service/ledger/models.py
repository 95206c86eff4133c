from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from service.kit.db.base import Base

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
        Index("ix_records_booked", "program_id", "booked_period"),
        Index("ix_records_partner_fp", "partner_id", "code_fingerprint"),
        Index("ix_records_partner_time", "partner_id", "occurred_at"),
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
    # An exchange record's channel: `partner` (the partner's desk) or `online` (the reward page).
    channel: Mapped[str | None] = mapped_column(String(8))
    # The campaign whose grant this record books (service/campaigns), so that documents show campaigns
    # as their own lines; None: an on-demand redemption, an exchange, breakage.
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # Filled by the BEFORE INSERT trigger of migration 0003f: the first month, from the one the record
    # happened in (program's time zone), that is not closed. Writers never name it.
    booked_period: Mapped[date | None] = mapped_column(Date, server_default=FetchedValue())


PERIOD_LOCK = 1_346_720_068  # advisory lock space shared with the booking trigger (migration 0003f)
DOCUMENT_KINDS = ("act.pdf", "registry.xlsx", "registry.csv")


class Period(Base):
    """A closed (or closing) month of a program. Open months have no row. Never deleted or reopened."""

    __tablename__ = "periods"
    __table_args__ = (
        CheckConstraint("status IN ('closing', 'closed')", name="status"),
        CheckConstraint("month = date_trunc('month', month)::date", name="first_of_month"),
        UniqueConstraint("program_id", "month"),
        UniqueConstraint("number"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    month: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    number: Mapped[int] = mapped_column(Integer)
    act_number: Mapped[str] = mapped_column(String(32))
    registry_number: Mapped[str] = mapped_column(String(32))
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_by: Mapped[str | None] = mapped_column(Text)
    record_count: Mapped[int | None] = mapped_column(BigInteger)
    totals: Mapped[dict | None] = mapped_column(JSONB)
    documents_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PeriodDocument(Base):
    __tablename__ = "period_documents"
    __table_args__ = (
        CheckConstraint("kind IN ('act.pdf', 'registry.xlsx', 'registry.csv')", name="kind"),
        UniqueConstraint(
            "period_id", "kind", name=conv("uq_period_documents_period_id")
        ),  # as 0003f named it
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id"))
    kind: Mapped[str] = mapped_column(String(32))
    number: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PeriodDocumentChunk(Base):
    """Document bytes in 1 MiB pieces: written and read as streams, so any size fits in constant memory."""

    __tablename__ = "period_document_chunks"
    document_id: Mapped[int] = mapped_column(ForeignKey("period_documents.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class RegistryEntry(Base):
    """A record's number in its program's registry, given when its period closes (migration
    0020_contract): per program 1, 2, 3, ... with no gap, in registry order (period by period, each by
    occurred_at, id). Record ids come from a sequence and have gaps (a refused request's rolled-back
    insert draws one); these numbers do not. Never changed."""

    __tablename__ = "registry_entries"
    __table_args__ = (
        CheckConstraint("number > 0", name=conv("ck_registry_entries_number")),
        UniqueConstraint("program_id", "number", name=conv("uq_registry_entries_program_number")),
        Index("ix_registry_entries_period", "period_id"),
    )
    record_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_records.id"), primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id"))
    number: Mapped[int] = mapped_column(BigInteger)
