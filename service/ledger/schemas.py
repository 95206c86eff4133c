"""Response models of the finance routes (documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.kit.values.money import Money

RecordType = Literal["issue", "cancel", "exchange", "breakage"]
ExportFormat = Literal["csv", "jsonl", "xlsx"]
DocumentKind = Literal["act.pdf", "registry.xlsx", "registry.csv"]
MONTH_PATTERN = r"^2\d{3}-(0[1-9]|1[0-2])$"
CAMPAIGN_EXAMPLE = "0b6a3c1e-8d7f-4a53-9a39-6f0e8c2d1b44"


class Sums(BaseModel):
    face_value: Money
    cost: Money
    vat: Money


class CurrencyTotal(Sums):
    currency: str
    records: int
    quantity: int


class ProductTotal(Sums):
    sku: str
    name: str
    partner: str | None
    records: int
    quantity: int
    vat_rate: str = Field(description='VAT rate in percent, e.g. "16.00"', examples=["16.00"])
    campaign: str | None = Field(
        default=None,
        description="The campaign whose grants (no points debited) this line sums; null: on-demand",
        examples=[CAMPAIGN_EXAMPLE],
    )
    campaign_name: str | None = Field(default=None, examples=["New Year"])


class CampaignTotal(Sums):
    campaign: str | None = Field(
        description="The campaign's id; null for the on-demand redemptions' records",
        examples=[CAMPAIGN_EXAMPLE],
    )
    campaign_name: str | None = Field(examples=["New Year"])
    currency: str
    records: int
    quantity: int


class TypeTotal(Sums):
    type: RecordType
    records: int
    quantity: int


class PeriodTotals(BaseModel):
    records: int
    late_records: int = Field(
        description="Records booked here that happened in an earlier, already closed month"
    )
    by_currency: list[CurrencyTotal]
    by_product: list[ProductTotal]
    by_type: list[TypeTotal]
    by_campaign: list[CampaignTotal] = Field(
        default_factory=list,
        description="Per source: the on-demand redemptions (campaign null), then each campaign's grants",
    )


class DocumentOut(BaseModel):
    kind: DocumentKind
    number: str = Field(examples=["A-000001"])
    filename: str
    content_type: str
    size: int
    sha256: str = Field(description="SHA-256 of the file, hex")
    created_at: datetime
    href: str


class PeriodOut(BaseModel):
    program: str
    month: str = Field(examples=["2026-03"])
    timezone: str
    ends_at: datetime = Field(description="First instant after the month in the program's time zone")
    status: Literal["open", "closing", "closed"]
    act_number: str | None = None
    registry_number: str | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    record_count: int | None = None
    totals: PeriodTotals | None = None
    documents: list[DocumentOut]


class DocumentsOut(BaseModel):
    program: str
    month: str
    status: Literal["open", "closing", "closed"]
    documents: list[DocumentOut]


class ReportedCode(BaseModel):
    line: int
    last4: str
    fingerprint: str = Field(description="HMAC-SHA256 fingerprint of the code, hex")
    activated_at: datetime | None = None
    amount: Money | None = None


class IssuedCode(BaseModel):
    last4: str
    fingerprint: str
    sku: str
    issued_at: datetime
    age_days: int
    face_value: Money
    redemption_id: str | None = None


class AmountMismatch(BaseModel):
    line: int
    last4: str
    fingerprint: str
    sku: str
    reported: Money
    expected: Money


class RejectedLine(BaseModel):
    line: int
    reason: str


class DiscrepancyCounts(BaseModel):
    activated_not_issued: int
    issued_not_activated: int
    amount_mismatches: int
    rejected: int
    duplicates: int


class PartnerReconciliationOut(BaseModel):
    partner: str
    period: str
    lines: int = Field(description="Code lines in the report (header and blank lines not counted)")
    matched: int
    counts: DiscrepancyCounts
    activated_not_issued: list[ReportedCode] = Field(
        description="Codes they activated that we never issued: a leak"
    )
    issued_not_activated: list[IssuedCode] = Field(
        description="Codes issued in the period that they never activated"
    )
    amount_mismatches: list[AmountMismatch]
    rejected: list[RejectedLine]
    duplicate_lines: list[int]
