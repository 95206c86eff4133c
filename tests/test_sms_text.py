"""GSM-7 vs UCS-2, segment counts, concatenation boundaries, templates and locales."""

from __future__ import annotations

import pytest

from service.delivery.text import GSM7, UCS2, encoding_for, render, segment_count, split

TEMPLATES = {
    "code": {"ru": "Код: {code}", "kk": "Код: {code}. {expires} дейін", "en": "Code: {code}"},
    "universal_card": {"ru": "Карта {card_number}, ПИН {pin}"},
}


@pytest.mark.parametrize(
    "text,encoding,segments",
    [
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),
        ("a" * 307, GSM7, 3),
        ("{" * 80, GSM7, 1),
        ("{" * 81, GSM7, 2),  # extension characters cost two septets
        ("Ж" * 70, UCS2, 1),
        ("Ж" * 71, UCS2, 2),
        ("Ж" * 134, UCS2, 2),
        ("Ж" * 135, UCS2, 3),
        ("ә ғ қ ң ө ұ ү һ і", UCS2, 1),
        ("Price 5€ [ok]", GSM7, 1),
        ("₸", UCS2, 1),
    ],
)
def test_encoding_and_segment_count(text, encoding, segments):
    assert encoding_for(text) == encoding and segment_count(text) == segments


def test_a_part_boundary_never_cuts_an_escape_pair():
    parts = split("a" * 152 + "€" + "b" * 10, GSM7)  # 164 septets: two parts, 153 per part
    assert parts[0] == bytes([0x61]) * 152 and parts[1][:2] == bytes([0x1B, 0x65])


def test_a_part_boundary_never_cuts_a_surrogate_pair():
    parts = split("Ж" * 66 + "😀" + "Ж" * 10, UCS2)
    assert all(len(p) % 2 == 0 for p in parts)
    assert parts[1].decode("utf-16-be").startswith("😀")


def test_the_subscribers_locale_is_used_and_ru_is_the_fallback():
    assert (
        render(TEMPLATES, "code", "kk", {"code": "X", "expires": "01.01.2027"}).text
        == "Код: X. 01.01.2027 дейін"
    )
    fallback = render(TEMPLATES, "universal_card", "en", {"card_number": "9398", "pin": "1234"})
    assert fallback.locale == "ru" and "ПИН 1234" in fallback.text and fallback.encoding == UCS2


def test_parts_rejoin_to_the_whole_text_and_each_is_filled_as_far_as_the_boundary_rules_allow():
    import random

    rng = random.Random(7)
    alphabet = ["a", "Z", "5", " ", "€", "{", "Ж", "қ", "😀"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60, 500)))
        encoding = encoding_for(text)
        parts, unit = split(text, encoding), (1 if encoding == GSM7 else 2)
        if encoding == UCS2:
            assert b"".join(parts).decode("utf-16-be") == text
        if len(parts) == 1:
            continue
        limit = (153 if encoding == GSM7 else 67) * unit
        for part, following in zip(parts, parts[1:], strict=False):
            assert len(part) <= limit
            # one septet or code unit short at most, and only when the next part opens with a pair
            # that did not fit (an escape pair, a surrogate pair)
            assert len(part) == limit or (
                len(part) == limit - unit
                and (following[0] == 0x1B if encoding == GSM7 else 0xD8 <= following[0] <= 0xDB)
            )
        assert (
            all(p[-1] != 0x1B for p in parts)
            if encoding == GSM7
            else all(not 0xD8 <= p[-2] <= 0xDB for p in parts)
        )


def _demo_templates() -> dict:
    from catalog import DEMO_CATALOG
    from catalog.loader import load_catalog

    program = load_catalog(DEMO_CATALOG).spec.programs[0]
    return program.templates.model_dump(mode="json")


# No PUBLIC_URL: the demo templates' trailing {link} is empty (and the text stripped).
FIELDS = {
    "program": "Mobile Bonus",
    "offer": "Кино",
    "code": "AB12",
    "brand": "Qazaq",
    "nominal": "5000 ₸",
    "link": "",
}


@pytest.mark.parametrize(
    "locale,until,forever",
    [
        ("ru", "Код: AB12. Действует до 31.12.2026.", "Код: AB12. Срок действия не ограничен."),
        ("kk", "Код: AB12. 31.12.2026 дейін жарамды.", "Код: AB12. Жарамдылық мерзімі шектелмеген."),
        ("en", "Code: AB12. Valid until 31.12.2026.", "Code: AB12. No expiry date."),
    ],
)
def test_a_reward_without_expiry_reads_as_its_own_phrase_in_every_locale(locale, until, forever):
    templates = _demo_templates()
    with_date = render(templates, "code", locale, FIELDS, expires="31.12.2026").text
    without = render(templates, "code", locale, FIELDS, expires=None).text
    assert with_date.endswith(until) and without.endswith(forever)


def test_no_demo_template_says_until_no_expiry():
    templates = _demo_templates()
    texts = [
        render(templates, kind, locale, {**FIELDS, "card_number": "9398", "pin": "1234"}, expires=None).text
        for kind in ("code", "universal_card")
        for locale in ("ru", "kk", "en")
    ]
    for wrong in ("до бессрочно", "мерзімсіз дейін", "until no expiry", "бессрочно", "мерзімсіз"):
        assert not any(wrong in text for text in texts), (wrong, texts)


def test_the_no_expiry_phrase_follows_the_template_used_when_the_locale_falls_back_to_ru():
    fallback = render({"code": {"ru": "Код {code}. {validity}."}}, "code", "kk", FIELDS, expires=None)
    assert (fallback.locale, fallback.text) == ("ru", "Код AB12. Срок действия не ограничен.")
