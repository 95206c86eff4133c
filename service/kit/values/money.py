"""Money is integer minor units inside and a decimal string with a currency outside. No floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, Field

# ISO 4217 minor-unit exponents of the currencies we can be configured with.
EXPONENTS = {"KZT": 2, "RUB": 2, "USD": 2, "EUR": 2, "UZS": 2, "KGS": 2}


class MoneyError(ValueError):
    pass


def exponent(currency: str) -> int:
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise MoneyError(f"unsupported currency {currency!r}") from None


def to_minor(amount: str | int, currency: str) -> int:
    """'5000.00' KZT -> 500000. Rejects floats, negative numbers and sub-minor precision."""
    if isinstance(amount, bool) or not isinstance(amount, (str, int)):
        raise MoneyError('amount must be a decimal string such as "5000.00"')
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise MoneyError(f"{amount!r} is not a decimal amount") from None
    if not value.is_finite() or value < 0:
        raise MoneyError("amount must be a non-negative decimal")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{currency} has {exponent(currency)} decimal places at most")
    return int(scaled)


def to_decimal_string(minor: int, currency: str) -> str:
    exp = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"


class Money(BaseModel):
    amount: str = Field(pattern=r"^-?\d+(\.\d+)?$", examples=["5000.00"])
    currency: str = Field(min_length=3, max_length=3, examples=["KZT"])

    @classmethod
    def of(cls, minor: int, currency: str) -> Money:
        return cls(amount=to_decimal_string(minor, currency), currency=currency)
