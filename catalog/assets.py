"""Files a catalog names besides its YAML: the logos of partners and products. A logo is a PNG or an
SVG inside the catalog folder, at most MAX_BYTES; an SVG is parsed (no DTD, no entities) and may not
script, embed other documents or fetch anything, since the pages serve it from our own origin."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

MAX_BYTES = 200 * 1024
MAX_PIXELS = 2048  # a PNG's width and height
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"
_FORBIDDEN_ELEMENTS = {"script", "foreignobject", "iframe", "embed", "object", "audio", "video", "image"}
_HREF = ("href", "{http://www.w3.org/1999/xlink}href")


@dataclass(frozen=True)
class Asset:
    id: str  # sha256 of the content, hex: the name it is served under
    content_type: str
    content: bytes


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _check_png(data: bytes) -> None:
    if not data.startswith(PNG_MAGIC) or data[12:16] != b"IHDR" or len(data) < 33:
        raise ValueError("not a PNG file (its first bytes are not a PNG signature and header)")
    width, height = struct.unpack(">II", data[16:24])
    if not (0 < width <= MAX_PIXELS and 0 < height <= MAX_PIXELS):
        raise ValueError(
            f"a PNG logo is at most {MAX_PIXELS}x{MAX_PIXELS} pixels; this one is {width}x{height}"
        )


def _check_svg(data: bytes) -> None:
    try:
        root = ElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise ValueError(f"an SVG logo may not have a DTD or entities ({type(exc).__name__})") from None
    except ElementTree.ParseError as exc:
        raise ValueError(f"not a well-formed SVG file: {exc}") from None
    if root.tag not in (SVG_NS + "svg", "svg"):
        raise ValueError("not an SVG file: its root element is not <svg>")
    if not (root.get("viewBox") or (root.get("width") and root.get("height"))):
        raise ValueError("an SVG logo needs a viewBox (or width and height) to be scaled")
    for element in root.iter():
        name = _local(element.tag)
        if name in _FORBIDDEN_ELEMENTS:
            raise ValueError(f"an SVG logo may not contain <{name}>")
        for attribute, value in element.attrib.items():
            if _local(attribute).startswith("on"):
                raise ValueError(f"an SVG logo may not have event handlers ({_local(attribute)})")
            if attribute in _HREF and not value.startswith("#"):
                raise ValueError('an SVG logo may only link within itself (href="#...")')
            if "url(" in value and "url(#" not in value.replace(" ", ""):
                raise ValueError("an SVG logo may not load anything (url(...) outside itself)")
        if name == "style" and element.text and ("@import" in element.text or "url(" in element.text):
            raise ValueError("an SVG logo's styles may not import or load anything")


def read_logo(root: Path, relative: str) -> Asset:
    """The logo `relative` to the catalog folder `root`, checked; ValueError says what is wrong."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError("a logo must be inside the catalog folder")
    if not path.is_file():
        raise ValueError(f"no file {relative} in the catalog folder")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"a logo is at most {MAX_BYTES // 1024} KiB; {relative} has {size // 1024} KiB")
    data = path.read_bytes()
    if path.suffix.lower() == ".png":
        _check_png(data)
        content_type = "image/png"
    else:
        _check_svg(data)
        content_type = "image/svg+xml"
    return Asset(hashlib.sha256(data).hexdigest(), content_type, data)
