"""Minting universal cards: an unguessable number with a Luhn check digit and a random PIN."""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.crypto import Vault

CARD_PREFIX = "9398"  # our brand's range; the rest is random, so numbers reveal no sequence
CARD_LENGTH = 16
PIN_LENGTH = 6


def luhn_check_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def new_card_number() -> str:
    body = CARD_PREFIX + "".join(secrets.choice("0123456789") for _ in range(CARD_LENGTH - len(CARD_PREFIX) - 1))
    return body + luhn_check_digit(body)


def new_pin() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(PIN_LENGTH))


def pin_matches(vault: Vault, pin_enc: bytes, offered: str) -> bool:
    return hmac.compare_digest(vault.decrypt(pin_enc, b"card-pin").encode(), offered.encode())


@dataclass(frozen=True)
class MintedCard:
    id: int
    number: str
    pin: str
    last4: str
    fingerprint: bytes
    expires_at: datetime


def mint_card(session: Session, vault: Vault, *, product_id: int, currency: str, nominal_minor: int,
              validity_days: int, now: datetime) -> MintedCard:
    expires_at = now + timedelta(days=validity_days)
    for _ in range(5):  # a collision in 10^11 numbers is vanishingly rare; the unique index decides
        number, pin = new_card_number(), new_pin()
        fingerprint = vault.fingerprint(number)
        card_id = session.execute(text(
            "INSERT INTO cards (product_id, number_fingerprint, number_enc, last4, pin_enc, currency,"
            " nominal_minor, balance_minor, expires_at, created_at)"
            " VALUES (:product, :fp, :number_enc, :last4, :pin_enc, :currency, :nominal, :nominal, :expires, :now)"
            " ON CONFLICT (number_fingerprint) DO NOTHING RETURNING id"),
            {"product": product_id, "fp": fingerprint, "number_enc": vault.encrypt(number, b"card-number"),
             "last4": number[-4:], "pin_enc": vault.encrypt(pin, b"card-pin"), "currency": currency,
             "nominal": nominal_minor, "expires": expires_at, "now": now}).scalar()
        if card_id is not None:
            return MintedCard(card_id, number, pin, number[-4:], fingerprint, expires_at)
    raise RuntimeError("could not mint a unique card number")
