"""Card verification and exchange: request and response bodies. Card numbers and PINs come in the
body (never the URL, which is logged) and never go out: responses show the last 4 digits only."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from catalog.model import SKU
from service.cards.numbers import luhn_valid
from service.kit.values.money import Money

CardStatus = Literal["active", "exhausted", "expired", "blocked", "cancelled"]


class CardCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(
        pattern=r"^[0-9]{16}$",
        description="The 16-digit card number; its last digit is the Luhn (mod 10) check digit of the first"
        " 15. Sixteen digits with a wrong check digit are a mistyped number: 422 `invalid_card_number`.",
        examples=["9398000000000001"],
        json_schema_extra={"writeOnly": True},
    )
    pin: str = Field(
        pattern=r"^[0-9]{4,8}$",
        description="The card's PIN: 4 to 8 digits (cards are issued with 6)",
        examples=["123456"],
        json_schema_extra={"writeOnly": True},
    )

    @field_validator("number")
    @classmethod
    def _luhn(cls, value: str) -> str:
        # The message never repeats the value: validation errors are returned and may be logged.
        if not luhn_valid(value):
            raise PydanticCustomError("invalid_card_number", "not a valid card number (check digit)")
        return value


class VerifyIn(CardCredentials):
    pass


class ExchangeIn(CardCredentials):
    sku: str = Field(
        pattern=SKU,
        description="One of the calling partner's certificate products",
        examples=["ARAY-CERT-1000"],
    )


class ExchangeableProduct(BaseModel):
    sku: str
    name: str
    face_value: Money
    affordable: bool = Field(description="The card's balance covers this product's face value")


class CardOut(BaseModel):
    last4: str = Field(description="Last 4 digits of the card number; never the full number")
    status: CardStatus
    balance: Money
    nominal: Money
    expires_at: datetime


class VerifyOut(CardOut):
    products: list[ExchangeableProduct] = Field(
        description="The calling partner's products in this card's exchange catalog (all of them for admin)"
    )


class CertificateOut(BaseModel):
    sku: str
    name: str
    code: str = Field(description="The certificate code in full: shown only to the exchanging partner")
    pin: str | None = Field(None, description="The certificate's PIN, when the partner uploaded one")
    last4: str
    face_value: Money
    expires_at: datetime | None


class ExchangeOut(BaseModel):
    id: UUID
    created_at: datetime
    amount: Money = Field(description="Debited from the card: the product's face value")
    card: CardOut
    certificate: CertificateOut


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1,
        max_length=500,
        # Not blank: at least one character that is not white space (what the validator strips).
        pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$",
        description="Why (kept in the card's audit trail)",
        examples=["subscriber reported theft"],
    )

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class CardEventOut(BaseModel):
    event: Literal["blocked", "unblocked", "locked", "unlocked", "expired"]
    reason: str | None
    key_id: str | None = Field(description="Public id of the API key that acted (none for automatic events)")
    at: datetime


class CardExchangeOut(BaseModel):
    id: UUID
    sku: str
    partner: str
    amount: Money
    last4: str = Field(description="Last 4 characters of the certificate code")
    created_at: datetime
    channel: Literal["partner", "online"] = Field(
        "partner", description="At the partner's desk, or by the holder on the reward page"
    )


class CardLockOut(BaseModel):
    locked_until: datetime = Field(description="Number + PIN entry is refused for everyone until then")
    failures: int = Field(description="Wrong PINs counted across clients (each client's first 5)")


class CardDetailsOut(CardOut):
    redemption_id: UUID
    lock: CardLockOut | None = Field(
        description="Locked after wrong PINs from several clients (none: not locked); POST …/unlock"
        " lifts it. The holder's own link is never locked."
    )
    exchanges: list[CardExchangeOut]
    events: list[CardEventOut]
