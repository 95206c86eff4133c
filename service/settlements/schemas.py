from __future__ import annotations

from pydantic import BaseModel, Field

from service.kit.values.money import Money


class SettlementLine(BaseModel):
    count: int = Field(description="Issues minus cancellations (issued), or exchanges (exchanged)")
    face_value: Money
    cost: Money = Field(description="What we owe the partner for these")


class ProductSettlement(BaseModel):
    sku: str
    name: str
    currency: str
    issued: SettlementLine = Field(
        description="Codes issued directly to subscribers ('issue' minus 'cancel' records)"
    )
    exchanged: SettlementLine = Field(
        description="Certificates given for universal cards ('exchange' records)"
    )
    exchanged_online: SettlementLine = Field(
        description="Of `exchanged`, those the holders made on the reward page (channel online); the"
        " rest were exchanged at the partner's desk"
    )
    cost_to_pay: Money = Field(description="issued.cost + exchanged.cost")


class SettlementTotals(BaseModel):
    currency: str
    issued: SettlementLine
    exchanged: SettlementLine
    exchanged_online: SettlementLine
    cost_to_pay: Money


class SettlementOut(BaseModel):
    partner: str
    name: str
    period: str = Field(description="YYYY-MM, a calendar month in each record's program time zone")
    products: list[ProductSettlement]
    totals: list[SettlementTotals] = Field(description="One line per currency (one for a KZT partner)")
    records: int = Field(description="How many reconciliation records these figures sum")
