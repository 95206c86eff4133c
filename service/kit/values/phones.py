"""Phone numbers: common local forms in, E.164 out (Kazakhstan is the default region)."""

from __future__ import annotations

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

DEFAULT_REGION = "KZ"
# The published form of a phone number: E.164 (+77011234567) or a local form (87011234567,
# 7011234567, +7 (701) 123-45-67): digits, an optional leading +, spaces, dashes, dots, parentheses.
# Whether such a string is a mobile number is the numbering plan's call (422 invalid_msisdn).
MSISDN_PATTERN = r"^\+?[0-9(][0-9 ().-]*$"
MSISDN_MIN, MSISDN_MAX = 5, 32
MSISDN_DESCRIPTION = (
    "A mobile number in E.164 (`+77011234567`) or a local form (`87011234567`, `7011234567`,"
    " `+7 (701) 123-45-67`; Kazakhstan is the default region), stored as E.164. A number of this form"
    " that is not a mobile number of the numbering plan is refused with 422 `invalid_msisdn`."
)
_MOBILE = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


def normalize_msisdn(raw: str) -> str:
    """'87011234567', '7011234567', '+7 701 123 45 67' -> '+77011234567'. Raises ValueError."""
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, DEFAULT_REGION)
    except NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    if phonenumbers.number_type(number) not in _MOBILE:
        raise ValueError("not a mobile number: an SMS cannot reach it")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
