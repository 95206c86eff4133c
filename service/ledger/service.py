"""Writing reconciliation records. VAT is VAT-inclusive (Kazakh retail prices include it)."""

from __future__ import annotations


def vat_included(gross_minor: int, rate_bp: int) -> int:
    """VAT inside a VAT-inclusive amount, rounded half up to the minor unit, in integers only."""
    if rate_bp <= 0 or gross_minor == 0:
        return 0
    sign = -1 if gross_minor < 0 else 1
    numerator = abs(gross_minor) * rate_bp * 2
    denominator = (10_000 + rate_bp) * 2
    return sign * ((numerator + denominator // 2) // denominator)
