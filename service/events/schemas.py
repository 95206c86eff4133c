"""The webhook events a program's endpoint receives, as the OpenAPI document declares them (its
`webhooks` section): one envelope, `{id, type, created_at, data}`, and a `data` per type."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from fastapi import FastAPI
from pydantic import BaseModel, Field, create_model

from service.kit.values.money import Money


class RedemptionEventData(BaseModel):
    redemption_id: UUID
    external_id: str
    status: Literal["sent", "delivered", "failed", "cancelled"]
    status_reason: str | None = Field(None, description="Why it failed (failed only)")
    sandbox: bool = Field(description="A sandbox key's redemption (docs/integration.md, Sandbox)")


class CardExchangedData(BaseModel):
    redemption_id: UUID | None = Field(description="The redemption that issued the card")
    external_id: str | None
    card_last4: str
    exchange_id: UUID
    sku: str = Field(description="The certificate the card was exchanged for")
    partner: str | None
    amount: Money
    balance: Money = Field(description="What is left on the card")
    channel: Literal["partner", "online"] = Field(
        "partner", description="At the partner's desk, or by the holder on the reward page"
    )


class CardExpiredData(BaseModel):
    redemption_id: UUID | None
    external_id: str | None
    card_last4: str
    unused_balance: Money = Field(description="Booked as breakage (not for a sandbox card)")
    expired_at: datetime
    sandbox: bool = Field(description="A card minted for a sandbox key's redemption")


class StockLowData(BaseModel):
    sku: str
    partner: str | None
    available: int
    threshold: int


class BudgetLowData(BaseModel):
    program: str
    month: str = Field(description="YYYY-MM, in the program's time zone")
    budget: Money
    spent: Money
    remaining: Money
    threshold_percent: int


class PeriodClosedData(BaseModel):
    program: str
    period: str = Field(description="YYYY-MM")
    act_number: str
    registry_number: str
    records: int
    closed_at: datetime


class CampaignApprovedData(BaseModel):
    campaign_id: UUID
    name: str
    lines: int = Field(description="The lines approved (the submitted snapshot)")
    total: Money = Field(description="Their value, reserved against the program's budget")
    approved_by: str = Field(
        description="The approver's key name or e-mail; a campaign at or below the program's"
        " threshold is approved on submission ('below the approval threshold')"
    )


class CampaignCompletedData(BaseModel):
    campaign_id: UUID
    name: str
    done: int = Field(description="Lines that became redemptions")
    failed: int = Field(description="Lines refused when they ran (their error codes are in the results)")
    spent: Money = Field(description="The value of the lines that became redemptions")


class EventEnvelope(BaseModel):
    id: UUID = Field(description="The same on every retry and replay (also in `webhook-id`): dedupe by it")
    type: str
    created_at: datetime
    data: Any


# type -> (its data, when it is sent)
EVENT_TYPES: dict[str, tuple[type[BaseModel], str]] = {
    "redemption.sent": (RedemptionEventData, "The provider took the reward SMS"),
    "redemption.delivered": (RedemptionEventData, "The delivery receipt says delivered"),
    "redemption.failed": (RedemptionEventData, "Undeliverable, or still undelivered at the deadline"),
    "redemption.cancelled": (RedemptionEventData, "Cancelled by request; reversing records written"),
    "card.exchanged": (CardExchangedData, "A partner or the holder exchanged (part of) a universal card"),
    "card.expired": (CardExpiredData, "A universal card expired; its unused balance is breakage"),
    "stock.low": (
        StockLowData,
        "A product's available codes fell below its threshold; sent once per crossing, to every"
        " program with an offer of it",
    ),
    "budget.low": (
        BudgetLowData,
        "The program has spent BUDGET_LOW_PERCENT of its monthly budget; once per crossing per month",
    ),
    "period.closed": (PeriodClosedData, "A month was closed and its documents are ready"),
    "campaign.approved": (CampaignApprovedData, "A campaign was approved (its value reserved); it runs next"),
    "campaign.completed": (CampaignCompletedData, "Every line of a campaign has run"),
}

_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "The event id",
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "Unix seconds of this attempt",
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": "Standard Webhooks: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, one per "
        "secret in force, space separated (two during a secret rotation's overlap)",
    },
]


def declare(app: FastAPI) -> None:
    """Adds every event type to the app's OpenAPI `webhooks`."""
    for name, (data_model, when) in EVENT_TYPES.items():
        envelope = create_model(
            "".join(part.capitalize() for part in name.replace(".", "_").split("_")) + "Event",
            __base__=EventEnvelope,
            type=(Literal[name], ...),  # type: ignore[arg-type]
            data=(data_model, ...),
        )

        def receive(body: EventEnvelope) -> None:
            """Documentation only: the program's endpoint receives this."""

        receive.__annotations__ = {"body": envelope, "return": None}  # the type's own envelope

        app.webhooks.post(
            name,
            summary=when,
            description=f"`{name}`: {when}. Answer 2xx; anything else is retried with backoff for 24 hours.",
            openapi_extra={"parameters": _HEADERS},
            status_code=204,
            response_description="Taken",
        )(receive)
