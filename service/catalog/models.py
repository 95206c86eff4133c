from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.kit.db.base import Base


class Partner(Base):
    __tablename__ = "partners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text)
    # What the holders' pages show (catalog/model.py PageSpec: texts per locale, logo, website,
    # locations); NULL: nothing beyond the name.
    page: Mapped[dict | None] = mapped_column(JSONB)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("kind IN ('code', 'universal_card')", name="kind"),
        CheckConstraint(
            "kind <> 'code' OR (partner_id IS NOT NULL AND face_value_minor IS NOT NULL"
            " AND cost_price_minor IS NOT NULL)",
            name="code_has_partner_and_prices",
        ),
        CheckConstraint("kind <> 'universal_card' OR validity_days IS NOT NULL", name="card_has_validity"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    partner_id: Mapped[int | None] = mapped_column(ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    face_value_minor: Mapped[int | None] = mapped_column(BigInteger)
    cost_price_minor: Mapped[int | None] = mapped_column(BigInteger)
    brand: Mapped[str | None] = mapped_column(Text)
    validity_days: Mapped[int | None] = mapped_column(Integer)
    low_stock_threshold: Mapped[int | None] = mapped_column(Integer)
    vat_schedule: Mapped[str | None] = mapped_column(String(64))
    vat_point: Mapped[str] = mapped_column(String(16), server_default="sale")
    page: Mapped[dict | None] = mapped_column(JSONB)  # as Partner.page, with the barcode format
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    partner: Mapped[Partner | None] = relationship(lazy="joined")


class VatRate(Base):
    """Effective-dated VAT: the rate of a schedule on a date is the latest row not after it."""

    __tablename__ = "vat_rates"
    schedule: Mapped[str] = mapped_column(String(64), primary_key=True)
    effective_from: Mapped[date] = mapped_column(Date, primary_key=True)
    rate_bp: Mapped[int] = mapped_column(Integer)  # basis points: 1600 = 16 %


class ExchangeCatalogItem(Base):
    """A `code` product that a universal card product may be exchanged for."""

    __tablename__ = "exchange_catalog_items"
    card_product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
    )
    code_product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)


class Program(Base):
    __tablename__ = "programs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    sms_sender: Mapped[str] = mapped_column(String(11))
    # The sender's TON/NPI in submit_sm (catalog sms_sender_ton/npi, else from the sender's form)
    sms_sender_ton: Mapped[int | None] = mapped_column(SmallInteger)
    sms_sender_npi: Mapped[int | None] = mapped_column(SmallInteger)
    templates: Mapped[dict] = mapped_column(JSONB)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    monthly_budget_minor: Mapped[int | None] = mapped_column(BigInteger)
    sms_deadline_hours: Mapped[int | None] = mapped_column(Integer)  # None: SMS_DEADLINE_HOURS
    # HH:MM-HH:MM local: bulk SMS wait while it lasts (service/kit/values/quiet_hours.py); None: none
    quiet_hours: Mapped[str | None] = mapped_column(String(11))
    # One SMS 30 days before a card with a balance expires (service/holders/reminders.py); off by default.
    expiry_reminder: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # A campaign worth more than this needs a second person's approval; None: every campaign does.
    campaign_approval_minor: Mapped[int | None] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Tariff(Base):
    __tablename__ = "tariffs"
    __table_args__ = (UniqueConstraint("program_id", "code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (UniqueConstraint("program_id", "code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(Text)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    active_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    limit_per_day: Mapped[int | None] = mapped_column(Integer)
    limit_per_month: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OfferPrice(Base):
    """Per-tariff terms of an offer: a tariff is eligible exactly when it has a row here."""

    __tablename__ = "offer_prices"
    __table_args__ = (CheckConstraint("nominal_minor > 0 AND points > 0", name="positive"),)
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id", ondelete="CASCADE"), primary_key=True)
    tariff_id: Mapped[int] = mapped_column(ForeignKey("tariffs.id"), primary_key=True)
    nominal_minor: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)


class CatalogRevision(Base):
    """One row per apply that changed something; `digest` makes re-applying the same files a no-op."""

    __tablename__ = "catalog_revisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    summary: Mapped[dict] = mapped_column(JSONB)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CatalogAsset(Base):
    """A file of the catalog folder the pages serve (a logo), by the sha256 of its content: a new file
    is a new id, so it is served with a year's caching."""

    __tablename__ = "catalog_assets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256, hex
    content_type: Mapped[str] = mapped_column(String(32))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
