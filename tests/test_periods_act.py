"""The act is a real PDF whose Cyrillic (and Kazakh) text is text in an embedded font, not boxes."""

from __future__ import annotations

import io
from datetime import date

import pytest

from service.ledger.periods import close_month, find_document, iter_document
from tests.conftest import import_codes_for
from tests.finance_helpers import almaty, cancel_at, redeem_at

MARCH = date(2026, 3, 1)


@pytest.fixture
def act(demo_catalog) -> bytes:
    import_codes_for("ARAY-CINEMA-2000", 5)
    import_codes_for("KITAP-BOOKS-5000", 5)
    redeem_at(almaty(2026, 3, 2, 10))
    redeem_at(almaty(2026, 3, 3, 10))
    redeem_at(almaty(2026, 3, 15, 12), offer="books-5000", points=5000)
    cancel_at(redeem_at(almaty(2026, 3, 20)), almaty(2026, 3, 20, 0, 5))
    redeem_at(almaty(2026, 3, 21), tariff="unlimited", offer="gift-card-5000", points=5000)
    close_month("mobile-bonus", MARCH, now=almaty(2026, 4, 1, 9))
    doc = find_document("mobile-bonus", MARCH, "act.pdf")
    return b"".join(iter_document(doc.document_id))


def _text(pdf: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_the_acts_cyrillic_text_extracts_as_text(act):
    text = _text(act)
    for expected in (
        "АКТ № A-000001",
        "выдачи цифровых вознаграждений за март 2026 г.",
        "Итоги по товарам",
        "Исполнитель",
        "Заказчик",
        "Подпись",
        "М.П.",
        "НДС",
        "реестр № R-000001",
        "ARAY-CINEMA-2000",
        "KITAP-BOOKS-5000",
        "QAZAQ-GIFT-CARD",
        "Итого (KZT)",
    ):
        assert expected in text, expected
    assert "қаңтар" not in text and "наурыз" in text  # the Kazakh subtitle, Kazakh letters included
    assert "\ufffd" not in text and "□" not in text


def test_the_act_embeds_a_unicode_font(act):
    from pypdf import PdfReader

    fonts = set()
    for page in PdfReader(io.BytesIO(act)).pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            fonts.add(str(font["/BaseFont"]))
            assert font["/Subtype"] == "/Type0" and "/ToUnicode" in font  # CID font: Unicode, extractable
    assert any("Roboto" in f for f in fonts)


def test_the_act_shows_totals_per_product_and_the_registry_checksums(act):
    text = _text(act).replace("\u202f", " ")
    assert "4 000,00" in text  # two cinema vouchers
    assert "551,72" in text  # their VAT: 2 × 275,86 (16 % inside 2 000,00)
    doc = find_document("mobile-bonus", MARCH, "registry.csv")
    assert doc.sha256 in text.replace("\n", "")


def test_the_act_renders_to_a_png_with_ink_on_it(act):
    import pypdfium2

    page = pypdfium2.PdfDocument(act)[0]
    image = page.render(scale=1.5).to_pil().convert("L")
    assert image.width > image.height  # landscape A4
    dark = sum(1 for v in image.getdata() if v < 128)
    assert dark > 0.01 * image.width * image.height  # text was drawn, not an empty page
