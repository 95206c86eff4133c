"""SMS text: the program's template in the subscriber's locale, encoded as GSM-7 when every
character fits (extension characters cost two septets) and as UCS-2 otherwise, split into
concatenated parts (UDH 05 00 03 ref total seq) that never cut an escape pair or a surrogate pair."""
from __future__ import annotations

import string
from dataclasses import dataclass

GSM7_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
              "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E,
                  "|": 0x40, "€": 0x65}
_BASIC_INDEX = {ch: i for i, ch in enumerate(GSM7_BASIC) if ch != "\x1b"}

GSM7, UCS2 = "GSM-7", "UCS-2"
SINGLE = {GSM7: 160, UCS2: 70}
PART = {GSM7: 153, UCS2: 67}
DATA_CODING = {GSM7: 0x00, UCS2: 0x08}


def encoding_for(text: str) -> str:
    return GSM7 if all(ch in _BASIC_INDEX or ch in GSM7_EXTENSION for ch in text) else UCS2


def _units(text: str, encoding: str) -> list[bytes]:
    """The text as indivisible units: a GSM septet (or escape pair), or a UTF-16 code unit (or pair)."""
    if encoding == GSM7:
        return [bytes([0x1B, GSM7_EXTENSION[ch]]) if ch in GSM7_EXTENSION else bytes([_BASIC_INDEX[ch]])
                for ch in text]
    return [ch.encode("utf-16-be") for ch in text]


def _width(unit: bytes, encoding: str) -> int:
    return len(unit) if encoding == GSM7 else len(unit) // 2


def split(text: str, encoding: str) -> list[bytes]:
    """Payloads (without UDH): one if it fits a single SMS, else parts of at most PART units."""
    units = _units(text, encoding)
    total = sum(_width(u, encoding) for u in units)
    if total <= SINGLE[encoding]:
        return [b"".join(units)]
    parts, current, width = [], [], 0
    for unit in units:
        w = _width(unit, encoding)
        if width + w > PART[encoding]:
            parts.append(b"".join(current))
            current, width = [], 0
        current.append(unit)
        width += w
    if current:
        parts.append(b"".join(current))
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


NO_EXPIRY = {"ru": "бессрочно", "kk": "мерзімсіз", "en": "no expiry"}
CURRENCY_SIGN = {"ru": {"KZT": "₸"}, "kk": {"KZT": "₸"}, "en": {}}


def format_amount(minor: int, currency: str, locale: str) -> str:
    whole, cents = divmod(minor, 100)
    amount = f"{whole}" if cents == 0 else f"{whole}.{cents:02d}"
    return f"{amount} {CURRENCY_SIGN.get(locale, {}).get(currency, currency)}"


def render(templates: dict, kind: str, locale: str, fields: dict[str, str]) -> RenderedSms:
    """`templates` is a program's {kind: {locale: text}}; a locale without a template falls back to ru."""
    by_locale = templates[kind]
    chosen = locale if by_locale.get(locale) else "ru"
    text = string.Formatter().vformat(by_locale[chosen], (), {k: v for k, v in fields.items()})
    encoding = encoding_for(text)
    return RenderedSms(text, encoding, len(split(text, encoding)), chosen)
