"""A period's totals in minor units: what the close computes and freezes (as JSON, in periods.totals),
what the act prints and what the views render. Plain JSON values, typed."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class Sums(TypedDict):
    records: int
    quantity: int
    face_value_minor: int
    cost_minor: int
    vat_minor: int


class ProductLine(Sums):
    sku: str
    name: str
    partner: str | None
    partner_name: str | None
    currency: str
    vat_rate_bp: int
    # The campaign whose grants the line sums (its id as text and its name); None for the on-demand
    # records. Totals frozen before campaigns existed have neither key: read them with .get().
    campaign_id: NotRequired[str | None]
    campaign_name: NotRequired[str | None]


class CampaignLine(Sums):
    """The sums of one source of the period's records: on-demand (campaign_id None) or a campaign."""

    campaign_id: str | None
    campaign_name: str | None
    currency: str


class TypeLine(Sums):
    type: str
    currency: str


class Totals(TypedDict):
    """A period's totals, in minor units: what the close freezes (as JSON, in periods.totals), what
    the act prints and what render_totals() shows."""

    records: int
    by_currency: dict[str, Sums]
    by_product: list[ProductLine]
    by_type: list[TypeLine]
    # Per source: the on-demand records, then each campaign (absent from totals frozen before).
    by_campaign: NotRequired[list[CampaignLine]]
    late_records: int


SUM_KEYS: tuple[Literal["records", "quantity", "face_value_minor", "cost_minor", "vat_minor"], ...] = (
    "records",
    "quantity",
    "face_value_minor",
    "cost_minor",
    "vat_minor",
)
