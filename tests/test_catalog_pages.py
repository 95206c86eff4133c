"""What the catalog gives the holders' pages: localized texts, logos (checked: type, size, inside the
folder, an SVG that cannot script or fetch), partners' websites and locations, the barcode format;
each optional, each problem reported at its file and line; applied into the pages' data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from catalog import DEMO_CATALOG
from catalog.loader import CatalogError, load_catalog
from service.catalog.service import apply_catalog
from service.kit.db.engine import new_session, transaction


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG, target)
    return target


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def refused(folder: Path):
    with pytest.raises(CatalogError) as caught:
        load_catalog(folder)
    return caught.value.problems


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><script>alert(1)</script></svg>',
            "<script>",
        ),
        (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9" onload="x()"/>', "event handlers"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:x="http://www.w3.org/1999/xlink"'
            b' viewBox="0 0 9 9">'
            b'<use x:href="https://evil.example/a.svg#x"/></svg>',
            "only link within itself",
        ),
        (
            b'<!DOCTYPE svg [<!ENTITY a "b">]><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"/>',
            "DTD",
        ),
        (b"<html><body>not a logo</body></html>", "root element is not <svg>"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="9" height="9"/></svg>', "viewBox"),
        (b"<svg", "well-formed"),
    ],
    ids=["script", "handler", "external-href", "entities", "not-svg", "no-viewbox", "broken"],
)
def test_an_unsafe_or_broken_svg_logo_is_refused_at_the_line_that_names_it(copy: Path, content, message):
    (copy / "logos" / "aray-cinema.svg").write_bytes(content)
    (problem,) = refused(copy)
    partners = copy / "partners.yaml"
    assert problem.file == str(partners) and problem.line == line_of(partners, "logos/aray-cinema.svg")
    assert "partners[0].logo" == problem.where and message in problem.message


def test_a_logo_too_large_of_the_wrong_type_missing_or_outside_the_folder_is_refused(copy: Path, tmp_path):
    (copy / "logos" / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (300 * 1024))
    (copy / "logos" / "fake.png").write_bytes(b"GIF89a not a png at all, padded" * 4)
    (tmp_path / "outside.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>')
    partners = copy / "partners.yaml"
    partners.write_text(
        partners.read_text()
        .replace("logos/aray-cinema.svg", "logos/big.png")
        .replace("logos/kitap-books.svg", "logos/fake.png")
        .replace("logos/dala-market.svg", "logos/missing.svg")
        .replace("logos/tulpar-taxi.svg", "../outside.svg")
    )
    problems = {p.where: p for p in refused(copy)}
    assert "200 KiB" in problems["partners[0].logo"].message
    assert "not a PNG" in problems["partners[1].logo"].message
    assert "no file" in problems["partners[2].logo"].message
    assert "inside the catalog folder" in problems["partners[3].logo"].message
    for index, name in enumerate(("big.png", "fake.png", "missing.svg", "outside.svg")):
        assert problems[f"partners[{index}].logo"].line == line_of(partners, name)


def test_a_png_logo_is_taken_and_served_as_a_png(copy: Path, db, client):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (  # a 1x1 white pixel
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff"))
        + chunk(b"IEND", b"")
    )
    (copy / "logos" / "aray.png").write_bytes(png)
    partners = copy / "partners.yaml"
    partners.write_text(partners.read_text().replace("logos/aray-cinema.svg", "logos/aray.png"))
    with transaction() as session:
        apply_catalog(session, load_catalog(copy))
    with new_session() as s:
        logo = s.execute(text("SELECT page->>'logo' FROM partners WHERE code = 'aray-cinema'")).scalar_one()
    served = client.get(f"/h/logos/{logo}")
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == png


def test_a_logo_of_another_type_is_refused_by_its_name(copy: Path):
    products = copy / "products.yaml"
    products.write_text(products.read_text().replace("logos/qazaq-gift.svg", "logos/qazaq-gift.gif"))
    (problem,) = refused(copy)
    assert problem.where == "products[6].logo" and ".png or .svg" in problem.message
    assert problem.line == line_of(products, "qazaq-gift.gif")


def test_a_bad_website_barcode_or_location_is_reported_with_its_line(copy: Path):
    partners = copy / "partners.yaml"
    partners.write_text(
        partners.read_text()
        .replace('"https://kitap-books.example.kz"', '"ftp://kitap"')
        .replace('{name: "Dala Market Abay", address: "Алматы, пр. Абая, 44"}', '{name: "Dala Market Abay"}')
    )
    products = copy / "products.yaml"
    products.write_text(products.read_text().replace("barcode: code128", "barcode: pdf417", 1))
    problems = {p.where: p for p in refused(copy)}
    assert problems["partners[1].website"].line == line_of(partners, "ftp://kitap")
    assert problems["partners[2].locations[0].address"].line == line_of(partners, "Dala Market Abay")
    assert problems["products[1].barcode"].line == line_of(products, "pdf417")


def test_the_catalog_command_reports_a_logo_problem_as_file_and_line(copy: Path, db):
    (copy / "logos" / "tulpar-taxi.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1" onclick="x()"/>'
    )
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "catalog", "apply", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    partners = copy / "partners.yaml"
    assert result.returncode == 2
    assert f"partners.yaml:{line_of(partners, 'logos/tulpar-taxi.svg')}: partners[3].logo" in result.stderr


def test_every_page_field_is_optional(copy: Path, db):
    for name in ("partners.yaml", "products.yaml"):
        kept = [
            line
            for line in (copy / name).read_text().splitlines()
            if not line.startswith(
                ("    logo:", "    website:", "    barcode:", "    locations:", "      - {name")
            )
        ]
        (copy / name).write_text("\n".join(kept) + "\n")
    loaded = load_catalog(copy)
    assert loaded.assets == {}
    with transaction() as s:
        apply_catalog(s, loaded)


def test_applying_stores_the_pages_data_and_each_logo_once_by_its_hash(demo_catalog):
    with new_session() as s:
        page = s.execute(text("SELECT page FROM partners WHERE code = 'dala-market'")).scalar_one()
        product = s.execute(text("SELECT page FROM products WHERE sku = 'KITAP-CERT-2500'")).scalar_one()
        assets = s.execute(text("SELECT id, content_type, length(content) FROM catalog_assets")).all()
        reminder = s.execute(text("SELECT expiry_reminder FROM programs ORDER BY code")).scalars().all()
    assert page["website"] == "https://dala-market.example.kz" and len(page["locations"]) == 3
    assert set(page["description"]) == {"ru", "kk", "en"} and len(page["logo"]) == 64
    assert product["barcode"] == "code128" and "instructions" in product
    assert len(assets) == 5 and {a.content_type for a in assets} == {"image/svg+xml"}
    assert reminder == [False, False, True]  # business, home-internet, mobile-bonus


def test_every_demo_partner_has_a_logo_website_and_texts():
    loaded = load_catalog(DEMO_CATALOG)
    for partner in loaded.spec.partners:
        assert partner.logo in loaded.assets and partner.website and partner.description
    for product in loaded.spec.products:
        assert product.kind == "universal_card" or product.instructions is not None
