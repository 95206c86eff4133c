"""SMS text: the program's template in the subscriber's locale, encoded as GSM-7 when every
character fits (extension characters cost two septets) and as UCS-2 otherwise, split into
concatenated parts (UDH 05 00 03 ref total seq) that never cut an escape pair or a surrogate pair."""

from __future__ import annotations

import string
from dataclasses import dataclass

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_BASIC_INDEX = {ch: i for i, ch in enumerate(GSM7_BASIC) if ch != "\x1b"}

GSM7, UCS2 = "GSM-7", "UCS-2"
SINGLE = {GSM7: 160, UCS2: 70}
PART = {GSM7: 153, UCS2: 67}
DATA_CODING = {GSM7: 0x00, UCS2: 0x08}


_GSM7_CHARS = frozenset(_BASIC_INDEX) | frozenset(GSM7_EXTENSION)
# str.translate to septet values, one char per septet (an extension character becomes ESC + its code),
# so that a whole text is packed by one C-level translate and encode instead of a loop per character.
_GSM7_SEPTETS = {ord(ch): chr(i) for ch, i in _BASIC_INDEX.items()} | {
    ord(ch): "\x1b" + chr(code) for ch, code in GSM7_EXTENSION.items()
}


def encoding_for(text: str) -> str:
    return GSM7 if _GSM7_CHARS.issuperset(text) else UCS2


def _encode(text: str, encoding: str) -> bytes:
    """GSM-7 as one septet value per byte (unpacked, as SMPP carries it), or UTF-16 big-endian."""
    if encoding == GSM7:
        return text.translate(_GSM7_SEPTETS).encode("latin-1")
    return text.encode("utf-16-be")


def _cut_here(payload: bytes, end: int, encoding: str) -> bool:
    """Whether a part may end at byte `end`: not inside an escape pair (an extension character's
    code byte is never ESC, so a trailing ESC always opens a pair) nor a surrogate pair."""
    if encoding == GSM7:
        return payload[end - 1] != 0x1B
    return not 0xD8 <= payload[end - 2] <= 0xDB


def split(text: str, encoding: str) -> list[bytes]:
    """Payloads (without UDH): one if it fits a single SMS, else parts of at most PART units, each
    filled as far as it goes."""
    payload = _encode(text, encoding)
    unit = 1 if encoding == GSM7 else 2
    if len(payload) <= SINGLE[encoding] * unit:
        return [payload]
    parts, start = [], 0
    while start < len(payload):
        end = min(start + PART[encoding] * unit, len(payload))
        if end < len(payload) and not _cut_here(payload, end, encoding):
            end -= unit
        parts.append(payload[start:end])
        start = end
    return parts


def segment_count(text: str) -> int:
    return len(split(text, encoding_for(text)))


def udh(reference: int, total: int, sequence: int) -> bytes:
    return bytes([0x05, 0x00, 0x03, reference & 0xFF, total, sequence])


def decode_gsm7(payload: bytes) -> str:
    reverse_ext = {v: k for k, v in GSM7_EXTENSION.items()}
    out, escape = [], False
    for byte in payload:
        if escape:
            out.append(reverse_ext.get(byte, " "))
            escape = False
        elif byte == 0x1B:
            escape = True
        else:
            out.append(GSM7_BASIC[byte])
    return "".join(out)


@dataclass(frozen=True)
class RenderedSms:
    text: str
    encoding: str
    segments: int
    locale: str


# {expires}: the date, or this word for a reward without expiry (it reads right only on its own,
# e.g. "Срок: {expires}"; "до {expires}" does not: use {validity}).
NO_EXPIRY = {"ru": "бессрочно", "kk": "мерзімсіз", "en": "no expiry"}
# {validity}: a whole phrase, one for a reward valid until a date and another for one without expiry.
# The Kazakh follows the forms of Kazakh operators' and banks' own texts (docs/delivery.md, "Templates").
VALID_UNTIL = {"ru": "Действует до {date}", "kk": "{date} дейін жарамды", "en": "Valid until {date}"}
VALID_FOREVER = {
    "ru": "Срок действия не ограничен",
    "kk": "Жарамдылық мерзімі шектелмеген",
    "en": "No expiry date",
}
CURRENCY_SIGN = {"ru": {"KZT": "₸"}, "kk": {"KZT": "₸"}, "en": {}}


def format_amount(minor: int, currency: str, locale: str) -> str:
    whole, cents = divmod(minor, 100)
    amount = f"{whole}" if cents == 0 else f"{whole}.{cents:02d}"
    return f"{amount} {CURRENCY_SIGN.get(locale, {}).get(currency, currency)}"


NOT_GIVEN = object()


def render(
    templates: dict, kind: str, locale: str, fields: dict[str, str], expires: str | None | object = NOT_GIVEN
) -> RenderedSms:
    """`templates` is a program's {kind: {locale: text}}; a locale without a template falls back to ru.
    `expires`: the reward's expiry date as the SMS shows it, or None for none; it fills {expires} and
    {validity} in the locale of the template used."""
    by_locale = templates[kind]
    chosen = locale if by_locale.get(locale) else "ru"
    values = dict(fields)
    if expires is not NOT_GIVEN:
        values["expires"] = NO_EXPIRY[chosen] if expires is None else str(expires)
        values["validity"] = (
            VALID_FOREVER[chosen] if expires is None else VALID_UNTIL[chosen].format(date=expires)
        )
    # Stripped: a template ending in `{link}` leaves no trailing space when there is no link.
    text = string.Formatter().vformat(by_locale[chosen], (), values).strip()
    encoding = encoding_for(text)
    return RenderedSms(text, encoding, len(split(text, encoding)), chosen)
