from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.kit.values.money import Money


class TariffOut(BaseModel):
    code: str
    name: str


class ProgramOut(BaseModel):
    code: str
    name: str
    currency: str
    timezone: str
    sms_sender: str
    monthly_budget: Money | None
    tariffs: list[TariffOut]


class BudgetBalance(BaseModel):
    month: str = Field(description="YYYY-MM, the program's current month in its time zone")
    budget: Money
    spent: Money = Field(description="Nominal of this month's redemptions, net of cancellations")
    remaining: Money


class ProgramDetailOut(ProgramOut):
    budget_this_month: BudgetBalance | None = Field(
        description="None: the program has no monthly budget. For a sandbox key, the sandbox's"
        " figures: what its redemptions this month would have spent (they take no budget)"
    )
    sandbox: bool = Field(description="The figures are the sandbox's (a sandbox key asked)")


class ProductRef(BaseModel):
    sku: str
    kind: Literal["code", "universal_card"]
    name: str
    partner: str | None
    face_value: Money | None = Field(description="For a universal card the nominal comes from the offer")


class OfferPriceOut(BaseModel):
    tariff: str
    nominal: Money
    points: int


class Availability(BaseModel):
    available: bool
    reason: Literal["out_of_stock", "not_started", "ended"] | None = None


class OfferLimits(BaseModel):
    """How many times one subscriber may redeem the offer; null: no limit."""

    per_subscriber_per_day: int | None = Field(
        description="Redemptions per subscriber per day (program's time zone); null: no limit", ge=1
    )
    per_subscriber_per_month: int | None = Field(
        description="Redemptions per subscriber per calendar month (program's time zone); null: no limit",
        ge=1,
    )


class OfferOut(BaseModel):
    code: str
    name: str
    program: str
    product: ProductRef
    tariffs: list[str] = Field(description="Eligible tariffs")
    prices: list[OfferPriceOut]
    points: int | None = Field(None, description="Price in points for the `tariff` asked for")
    nominal: Money | None = Field(None, description="Nominal for the `tariff` asked for")
    active_from: datetime | None
    active_to: datetime | None
    limits: OfferLimits
    availability: Availability


class ProductOut(ProductRef):
    cost_price: Money | None
    currency: str
    brand: str | None = None
    validity_days: int | None = None
    exchange_catalog: list[str] = Field(
        default_factory=list, description="For a universal card: the code products it may be exchanged for"
    )
