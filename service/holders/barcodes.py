"""The code as the partner's tills scan it: a QR code (segno) or a linear barcode, Code 128 or EAN-13
(python-barcode), rendered on the server as SVG and put on the page as a data: image, so the page
loads nothing from anywhere and the image never outlives the response (no-store)."""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass

import barcode
import segno
from barcode.writer import SVGWriter

FORMATS = ("qr", "code128", "ean13")
_EAN13 = re.compile(r"^\d{13}$")


@dataclass(frozen=True)
class Barcode:
    format: str  # what was drawn: qr, code128 or ean13
    svg: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg).decode("ascii")


def _qr(code: str) -> bytes:
    out = io.BytesIO()
    segno.make(code, error="m", micro=False).save(
        out, kind="svg", scale=8, border=4, xmldecl=False, dark="#000", light="#fff"
    )
    return out.getvalue()


def _linear(kind: str, code: str) -> bytes:
    out = io.BytesIO()
    barcode.get(kind, code, writer=SVGWriter()).write(
        out, options={"write_text": False, "module_height": 18.0, "quiet_zone": 6.5, "background": "white"}
    )
    return out.getvalue()


def ean13_valid(code: str) -> bool:
    """13 digits with a right check digit: what the till reads back is then the code itself."""
    if not _EAN13.match(code):
        return False
    digits = [int(d) for d in code]
    check = (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits[:12])) % 10) % 10
    return check == digits[12]


def render(code: str, wanted: str | None) -> Barcode:
    """The code in the catalog's format (QR by default). A code that EAN-13 cannot carry, or that Code
    128 cannot (not ASCII), is drawn as a QR code, which carries anything."""
    if wanted == "ean13" and ean13_valid(code):
        return Barcode("ean13", _linear("ean13", code))
    if wanted in ("code128", "ean13") and code.isascii() and code.isprintable():
        return Barcode("code128", _linear("code128", code))
    return Barcode("qr", _qr(code))
