"""The page's barcodes scan back to the code: the SVG the page carries is rasterized (CairoSVG) and
read by a barcode decoder (zxing-cpp), as a till's scanner would read the screen."""

from __future__ import annotations

import base64
import io
import re

import cairosvg
import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import text

from service.catalog.snapshot import invalidate_snapshot
from service.kit.db.engine import driver, new_session, transaction
from service.pools.service import read_code
from tests.conftest import import_codes_for, post_redemption
from tests.test_holders import PUBLIC, deliver_notices, form_of, otp_from, path_of
from tests.test_holders import public_url as public_url  # noqa: F401  (the autouse fixture)


def scan(html: str, element_id: str) -> tuple[str, str]:
    """The barcode image `element_id` of the page, decoded: (text, format)."""
    uri = re.search(rf'id="{element_id}" src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert uri, html[:3000]
    svg = base64.b64decode(uri.group(1))
    png = cairosvg.svg2png(bytestring=svg, output_width=900, background_color="white")
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)).convert("L"))
    assert len(found) == 1, f"{len(found)} barcodes found"
    return found[0].text, found[0].format.name


def the_code() -> str:
    with new_session() as s:
        code_id = s.execute(
            text("SELECT code_id FROM redemptions ORDER BY created_at DESC LIMIT 1")
        ).scalar_one()
        return read_code(driver(s), code_id)[0]


def reveal(client, keys, offer: str, points: int) -> str:
    made = post_redemption(client, keys, offer=offer, points=points)
    assert made.status_code == 201, made.text
    path = path_of(made.json()["reward_url"])
    return client.post(path + "/show", data={"form": form_of(client.get(path).text)}).text


@pytest.mark.parametrize(
    ("sku", "offer", "points", "barcode", "codes", "expected"),
    [
        ("ARAY-CINEMA-2000", "cinema-2000", 2000, "qr", None, "QRCode"),
        ("KITAP-BOOKS-5000", "books-5000", 5000, "code128", None, "Code128"),
        ("KITAP-BOOKS-5000", "books-5000", 5000, "ean13", ["4006381333931"], "EAN13"),
    ],
    ids=["qr", "code128", "ean13"],
)
def test_the_pages_barcode_scans_back_to_the_code(client, keys, sku, offer, points, barcode, codes, expected):
    import_codes_for(sku, codes or 2)
    with transaction() as s:
        s.execute(
            text(
                "UPDATE products SET page = coalesce(page, '{}'::jsonb)"
                " || jsonb_build_object('barcode', CAST(:b AS text)) WHERE sku = :sku"
            ),
            {"b": barcode, "sku": sku},
        )
    invalidate_snapshot()
    html = reveal(client, keys, offer, points)
    value, kind = scan(html, "revealed-barcode")
    assert value == the_code() and kind == expected


def test_a_code_ean13_cannot_carry_is_drawn_in_a_format_that_can(client, keys):
    import_codes_for("KITAP-BOOKS-5000", ["KB-NOT-DIGITS-1"])
    with transaction() as s:
        s.execute(
            text(
                "UPDATE products SET page = jsonb_build_object('barcode', 'ean13')"
                " WHERE sku = 'KITAP-BOOKS-5000'"
            )
        )
    invalidate_snapshot()
    value, kind = scan(reveal(client, keys, "books-5000", 5000), "revealed-barcode")
    assert value == "KB-NOT-DIGITS-1" and kind == "Code128"


def test_a_certificate_exchanged_online_scans_back_to_its_code(client, keys, tmp_path):
    from tests.test_holders import ask, card_reward, confirm

    card, path = card_reward(client, keys)
    asked = ask(client, path, "KITAP-CERT-2500")
    done = confirm(client, path, asked.text, otp_from(deliver_notices(tmp_path)[0]))
    code = re.search(r'id="certificate-code" aria-labelledby="certificate-label">([^<]+)<', done.text).group(
        1
    )
    value, kind = scan(done.text, "certificate-barcode")
    assert value == code and kind == "Code128"
    assert PUBLIC
