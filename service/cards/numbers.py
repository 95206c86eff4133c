"""Card numbers and PINs: what they look like, how they are checked, how new ones are drawn."""

from __future__ import annotations

import secrets

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
    return number.isdigit() and len(number) > 1 and luhn_check_digit(number[:-1]) == number[-1]


def new_card_number() -> str:
    body = CARD_PREFIX + "".join(
        secrets.choice("0123456789") for _ in range(CARD_LENGTH - len(CARD_PREFIX) - 1)
    )
    return body + luhn_check_digit(body)


def new_pin() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(PIN_LENGTH))
