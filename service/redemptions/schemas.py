from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from catalog.model import SLUG
from service.kit.values.money import Money
from service.kit.values.phones import (
    MSISDN_DESCRIPTION,
    MSISDN_MAX,
    MSISDN_MIN,
    MSISDN_PATTERN,
    normalize_msisdn,
)

Locale = Literal["ru", "kk", "en"]
Status = Literal["accepted", "sent", "delivered", "failed", "cancelled"]


class RedemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: str = Field(pattern=SLUG, examples=["mobile-bonus"])
    tariff: str = Field(pattern=SLUG, examples=["basic"])
    offer: str = Field(pattern=SLUG, examples=["cinema-2000"])
    msisdn: str = Field(
        min_length=MSISDN_MIN,
        max_length=MSISDN_MAX,
        pattern=MSISDN_PATTERN,
        description=MSISDN_DESCRIPTION,
        examples=["87011234567"],
    )
    points: int = Field(gt=0, le=10**12, examples=[2000])
    external_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The loyalty system's id of this operation (unique per program)",
    )
    locale: Locale | None = Field(None, description="SMS language; default ru")

    @field_validator("msisdn")
    @classmethod
    def _e164(cls, value: str) -> str:
        try:
            return normalize_msisdn(value)
        except ValueError as exc:  # of the published form, but not a mobile number: invalid_msisdn
            raise PydanticCustomError("invalid_msisdn", str(exc)) from None


class RewardOut(BaseModel):
    kind: Literal["code", "universal_card"]
    sku: str
    name: str
    partner: str | None
    nominal: Money
    last4: str = Field(description="Last 4 characters of the code or card number; never the full value")
    expires_at: datetime | None


class SmsOut(BaseModel):
    """One SMS of the redemption (the first, or a resend) and what became of it."""

    send: int = Field(description="0: the first SMS; 1, 2, 3: resends asked for", examples=[0])
    provider: str | None = Field(description="Who took it: smpp, http, file, sandbox", examples=["smpp"])
    status: Literal["pending", "submitting", "sent", "delivered", "failed", "cancelled"] = Field(
        description="pending (to send, or to send again), submitting (handed to the provider, its answer"
        " not known yet), sent (the provider took every part), delivered (receipt), failed, cancelled"
    )
    segments: int | None = Field(description="Parts of the SMS, each billed by the operator", examples=[2])
    attempts: int = Field(description="Submissions to the provider so far", examples=[1])
    submitted_at: datetime | None = Field(description="When the latest submission started")
    sent_at: datetime | None = Field(description="When the provider had taken every part")
    receipt_at: datetime | None = Field(description="When the latest delivery receipt arrived")
    receipt_state: str | None = Field(
        description="The receipts' state: DELIVRD, EXPIRED, UNDELIV, REJECTD, DELETED, ENROUTE, ACCEPTD,"
        " UNKNOWN; none before the first receipt",
        examples=["DELIVRD"],
    )
    error_code: str | None = Field(
        description="The provider's code for the latest error: an SMPP status (0x58), generic_nack,"
        " http 503, or the receipt's state for an undeliverable SMS",
        examples=[None],
    )
    error: str | None = Field(description="The latest error, in words", examples=[None])


class RedemptionOut(BaseModel):
    id: UUID
    external_id: str
    program: str
    tariff: str
    offer: str
    msisdn: str
    points: int
    locale: Locale
    status: Status
    status_reason: str | None
    reward: RewardOut
    resend_count: int
    sandbox: bool = Field(
        description="A sandbox key's redemption: a test reward, no stock, budget or finance records"
    )
    reward_url: str | None = Field(
        None,
        description="The subscriber's reward page (PUBLIC_URL/r/<token>), the link the SMS carries: the"
        ' code behind a "show" button, a card\'s balance and online exchange. Null when the service has no'
        " PUBLIC_URL or the reward was issued before the pages existed. A secret of the subscriber: show it"
        " only to them.",
        examples=["https://r.example.kz/r/3kTMd0aX9Qw2LpZ7bN1cVe"],
    )
    created_at: datetime
    updated_at: datetime
    sms: list[SmsOut] = Field(
        default_factory=list,
        description="The reward's SMS, oldest first: the first and each resend, with its delivery"
        " (empty in the answer to the redemption itself: none has been tried yet)",
    )
