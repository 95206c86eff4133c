"""The holders' reward page (/r/<token>) and card entry (/card), through the app as a browser uses
it (forms, cookies), with state built by the API and the domain functions."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session, transaction
from tests.conftest import assert_problem, import_codes_for, post_redemption

PUBLIC = "https://r.example.kz"


@pytest.fixture(autouse=True)
def public_url(monkeypatch):
    from service.kit.config import reset_settings_cache

    monkeypatch.setenv("PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("HOLDER_RATE_PER_TOKEN", "1000")
    monkeypatch.setenv("HOLDER_RATE_PER_ADDRESS", "1000")
    reset_settings_cache()
    yield
    reset_settings_cache()


def flush_limits():
    import redis

    from service.kit.config import get_settings

    client = redis.Redis.from_url(get_settings().redis_url)
    for key in client.scan_iter("rewards:ratelimit:holders:*"):
        client.delete(key)


def path_of(url: str) -> str:
    assert url.startswith(PUBLIC + "/r/")
    return url[len(PUBLIC) :]


def form_of(html: str, action_end: str = "") -> str:
    match = re.search(r'name="form" value="([^"]+)"', html)
    assert match, html[:2000]
    return match.group(1)


def code_reward(client, keys, **overrides) -> dict:
    import_codes_for("ARAY-CINEMA-2000", 3)
    made = post_redemption(client, keys, **overrides)
    assert made.status_code == 201, made.text
    return made.json()


def test_a_redemption_carries_its_reward_url_and_reading_it_again_gives_the_same(client, keys):
    made = code_reward(client, keys)
    url = made["reward_url"]
    token = url.rsplit("/", 1)[1]
    assert url == f"{PUBLIC}/r/{token}" and len(token) == 22 and token.isalnum()
    again = client.get(f"/v1/redemptions/{made['id']}", headers=keys.header("loyalty")).json()
    assert again["reward_url"] == url


def test_the_redemption_stores_only_the_hash_of_its_token(client, keys):
    import hashlib

    made = code_reward(client, keys)
    token = made["reward_url"].rsplit("/", 1)[1]
    with new_session() as s:
        stored = s.execute(
            text("SELECT link_hash FROM redemptions WHERE id = :id"), {"id": made["id"]}
        ).scalar_one()
    assert bytes(stored) == hashlib.sha256(token.encode()).digest()
    with new_session() as s:
        dump = s.execute(text("SELECT row_to_json(r)::text FROM redemptions r")).scalar_one()
    assert token not in dump


def test_a_get_shows_the_reward_but_never_the_code_and_exposes_nothing(client, keys):
    made = code_reward(client, keys)
    page = client.get(path_of(made["reward_url"]))
    assert page.status_code == 200
    html = page.text
    assert "Aray Cinema" in html and "2 000" in html and made["reward"]["last4"] in html
    with new_session() as s:
        code = s.execute(
            text("SELECT r.revealed_at, c.status FROM codes c JOIN redemptions r ON r.code_id = c.id")
        ).one()
    assert code.revealed_at is None and code.status == "reserved"
    assert 'id="revealed' not in html
    cancel = client.post(f"/v1/redemptions/{made['id']}/cancel", headers=keys.header("loyalty"))
    assert cancel.status_code == 200  # a GET did not count as exposure


# --- helpers ------------------------------------------------------------------------------------


def deliver_notices(folder) -> list[dict]:
    """The worker's delivery of every pending notice (one-time codes, certificates) to the SMS file,
    and the file's lines."""
    import json

    from service.delivery.notices import deliver_notice
    from service.delivery.providers import FileProvider

    with new_session() as s:
        ids = list(
            s.execute(text("SELECT id FROM sms_notices WHERE status = 'pending' ORDER BY id")).scalars()
        )
    provider = FileProvider(folder / "sms.jsonl")
    for notice_id in ids:
        deliver_notice(notice_id, provider=provider)
    path = folder / "sms.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def otp_from(sms: dict) -> str:
    match = re.search(r"\n@r\.example\.kz #(\d{6})$", sms["text"])
    assert match, sms["text"]
    return match.group(1)


def card_reward(client, keys, **overrides):
    from tests.test_cards import issue_card

    import_codes_for("ARAY-CERT-1000", 5)
    import_codes_for("KITAP-CERT-2500", 5)
    card = issue_card(client, keys, **overrides)
    url = client.get(f"/v1/redemptions/{card.redemption_id}", headers=keys.header("loyalty")).json()[
        "reward_url"
    ]
    return card, path_of(url)


def ask(client, path: str, sku: str):
    page = client.get(path)
    return client.post(path + "/exchange", data={"sku": sku, "form": form_of(page.text)})


def confirm(client, path: str, asked_html: str, code: str):
    action = re.search(r'action="(/r/[^"]+/exchange/[0-9a-f\-]+)"', asked_html)
    assert action, asked_html[:3000]
    return client.post(action.group(1), data={"code": code, "form": form_of(asked_html)})


def balance_of(card_id: int) -> int:
    with new_session() as s:
        return s.execute(text("SELECT balance_minor FROM cards WHERE id = :id"), {"id": card_id}).scalar_one()


# --- a code -------------------------------------------------------------------------------------


def test_show_is_a_post_that_reveals_the_code_with_its_barcode_and_copy_button(client, keys):
    made = code_reward(client, keys)
    path = path_of(made["reward_url"])
    page = client.get(path)
    shown = client.post(path + "/show", data={"form": form_of(page.text)})
    assert shown.status_code == 200
    with new_session() as s:
        code = s.execute(text("SELECT code_id FROM redemptions")).scalar_one()
    from service.kit.db.engine import driver
    from service.pools.service import read_code

    with new_session() as s:
        full, _ = read_code(driver(s), code)
    assert f'id="revealed-code" aria-labelledby="revealed-label">{full}<' in shown.text
    assert 'data-copy="' + full + '"' in shown.text
    assert 'src="data:image/svg+xml;base64,' in shown.text  # the QR, drawn on the server
    assert 'aria-live="assertive"' in shown.text
    assert shown.headers["cache-control"] == "no-store"


def test_a_codes_pin_stays_hidden_until_show_like_the_code(client, keys):
    from service.kit.db.engine import transaction as tx
    from service.pools.service import RawLine, import_codes

    with tx() as s:
        import_codes(s, "ARAY-CINEMA-2000", [RawLine(1, "ARAYPIN0000000001", "731905")], source="test")
    made = post_redemption(client, keys)
    path = path_of(made.json()["reward_url"])
    page = client.get(path)
    assert "731905" not in page.text and "ARAYPIN0000000001" not in page.text
    shown = client.post(path + "/show", data={"form": form_of(page.text)})
    assert 'id="revealed-pin" aria-labelledby="revealed-pin-label">731905<' in shown.text


def test_the_code_page_tells_the_expiry_and_how_to_use_the_code_in_the_holders_language(client, keys):
    import_codes_for("ARAY-CINEMA-2000", ["ARAYEXP000000001"], expires_at="2027-03-31")
    made = post_redemption(client, keys)
    assert made.status_code == 201, made.text
    html = client.get(path_of(made.json()["reward_url"]), headers={"Accept-Language": "en"}).text
    assert "<dt>Valid until</dt><dd>31.03.2027</dd>" in html
    assert "Show the code at the cinema&#39;s box office" in html
    assert "One code per order. Not exchangeable for cash." in html


def test_a_code_shown_on_the_page_counts_as_exposed_and_cannot_be_cancelled(client, keys):
    made = code_reward(client, keys)
    path = path_of(made["reward_url"])
    client.post(path + "/show", data={"form": form_of(client.get(path).text)})
    with new_session() as s:
        row = s.execute(
            text("SELECT r.revealed_at, c.status FROM redemptions r JOIN codes c ON c.id = r.code_id")
        ).one()
        events = list(s.execute(text("SELECT event FROM holder_events")).scalars())
    assert row.revealed_at is not None and row.status == "issued" and events == ["code_shown"]
    refused = client.post(f"/v1/redemptions/{made['id']}/cancel", headers=keys.header("loyalty"))
    assert_problem(refused, 409, "not_cancellable")


def test_a_show_without_the_pages_form_token_reveals_nothing(client, keys):
    made = code_reward(client, keys)
    path = path_of(made["reward_url"])
    forged = client.post(path + "/show", data={"form": "1700000000.AAAAAAAAAAAAAAAAAAAAAAAA"})
    other = code_reward(client, keys, msisdn="87017770000")
    borrowed = client.post(
        path + "/show", data={"form": form_of(client.get(path_of(other["reward_url"])).text)}
    )
    cross = client.post(
        path + "/show",
        data={"form": form_of(client.get(path).text)},
        headers={"Origin": "https://evil.example"},
    )
    for response in (forged, borrowed, cross):
        assert 'id="revealed' not in response.text
    with new_session() as s:
        assert (
            s.execute(text("SELECT count(*) FROM redemptions WHERE revealed_at IS NOT NULL")).scalar_one()
            == 0
        )


def test_every_holder_page_carries_the_safety_headers(client, keys):
    made = code_reward(client, keys)
    path = path_of(made["reward_url"])
    answers = [
        client.get(path),
        client.post(path + "/show", data={"form": form_of(client.get(path).text)}),
        client.get("/r/" + "x" * 22),
        client.get("/card"),
    ]
    for response in answers:
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-robots-tag"] == "noindex, nofollow"
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp


def test_a_guessed_token_a_malformed_one_and_a_cancelled_reward_get_the_same_404_page(client, keys):
    from service.kit.security.links import base62

    made = code_reward(client, keys)
    cancelled = code_reward(client, keys, msisdn="87017770001")
    client.post(f"/v1/redemptions/{cancelled['id']}/cancel", headers=keys.header("loyalty"))
    guessed = client.get("/r/" + base62(uuid.uuid4().int >> 2))
    malformed = client.get("/r/..%2F..%2Fetc")
    gone = client.get(path_of(cancelled["reward_url"]))
    assert client.get(path_of(made["reward_url"])).status_code == 200
    assert guessed.status_code == malformed.status_code == gone.status_code == 404
    assert guessed.text == gone.text


def test_once_its_expiry_has_passed_the_page_only_says_the_reward_has_expired(client, keys):
    made = code_reward(client, keys)
    with transaction() as s:
        s.execute(text("UPDATE redemptions SET reward_expires_at = now() - interval '1 day'"))
    page = client.get(path_of(made["reward_url"]))
    assert page.status_code == 410 and made["reward"]["last4"] not in page.text
    shown = client.post(path_of(made["reward_url"]) + "/show", data={"form": "x"})
    assert shown.status_code == 410


def test_the_page_speaks_the_browsers_language_and_the_switch_sticks(client, keys):
    made = code_reward(client, keys)
    path = path_of(made["reward_url"])
    assert 'lang="kk"' in client.get(path, headers={"Accept-Language": "kk-KZ,ru;q=0.8"}).text[:200]
    assert 'lang="en"' in client.get(path, headers={"Accept-Language": "en-GB,en;q=0.9"}).text[:200]
    assert 'lang="ru"' in client.get(path, headers={"Accept-Language": "de-DE"}).text[:200]
    switched = client.get(path + "?lang=en", headers={"Accept-Language": "ru"})
    assert 'lang="en"' in switched.text[:200] and "Show the code" in switched.text
    assert 'lang="en"' in client.get(path, headers={"Accept-Language": "ru"}).text[:200]  # the cookie


def test_logos_are_served_with_long_caching_and_a_sandboxing_policy(client, keys):
    made = code_reward(client, keys)
    html = client.get(path_of(made["reward_url"])).text
    logo = re.search(r'src="(/h/logos/[0-9a-f]{64})"', html).group(1)
    response = client.get(logo)
    assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "sandbox" in response.headers["content-security-policy"]
    assert client.get("/h/logos/" + "0" * 64).status_code == 404


def test_a_pages_requests_over_the_limit_get_a_429_page_with_retry_after(client, keys, monkeypatch):
    from service.kit.config import reset_settings_cache

    made = code_reward(client, keys)
    monkeypatch.setenv("HOLDER_RATE_PER_TOKEN", "3")
    reset_settings_cache()
    flush_limits()
    path = path_of(made["reward_url"])
    answers = [client.get(path) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1 and "<html" in answers[-1].text
    assert answers[-1].headers["cache-control"] == "no-store"
    other = code_reward(client, keys, msisdn="87017770002")
    assert client.get(path_of(other["reward_url"])).status_code == 200  # another token is not limited
    flush_limits()


def test_requests_from_one_address_over_its_limit_get_a_429_page(client, keys, monkeypatch):
    from service.kit.config import reset_settings_cache

    monkeypatch.setenv("HOLDER_RATE_PER_ADDRESS", "2")
    reset_settings_cache()
    flush_limits()
    answers = [client.get("/r/" + "A" * 22) for _ in range(3)]
    assert [a.status_code for a in answers] == [404, 404, 429]
    flush_limits()


# --- a card and its online exchange ---------------------------------------------------------------


def test_a_cards_page_shows_its_balance_history_and_exchange_catalog_with_logos(client, keys):
    card, path = card_reward(client, keys)
    html = client.get(path, headers={"Accept-Language": "en"}).text
    assert 'id="balance">5\u00a0000\u00a0₸<' in html and card.number[-4:] in html and card.number not in html
    for sku in ("ARAY-CERT-1000", "KITAP-CERT-2500", "DALA-CERT-5000"):
        assert f'id="offer-{sku}"' in html
    assert html.count('src="/h/logos/') >= 4  # the card's own and each partner's
    assert "Aray Cinema Esentai" in html and "No exchanges yet." in html
    assert 'id="card-status" class="status-active">active<' in html and "Valid until" in html
    assert "2\u00a0500\u00a0₸" in html and "1\u00a0000\u00a0₸" in html  # the certificates' face values


def test_asking_for_a_code_sends_it_to_the_cards_phone_bound_to_our_origin(client, keys, tmp_path):
    card, path = card_reward(client, keys, msisdn="87015550101")
    asked = ask(client, path, "ARAY-CERT-1000")
    assert asked.status_code == 200 and 'autocomplete="one-time-code"' in asked.text
    assert 'inputmode="numeric"' in asked.text and asked.text.count('name="code"') == 1
    assert "+7 *** *** 01 01" in asked.text
    (sms,) = deliver_notices(tmp_path)
    assert sms["to"] == "+77015550101" and sms["sender"] == "QazaqBonus"
    assert sms["text"].splitlines()[-1] == f"@r.example.kz #{otp_from(sms)}"
    with new_session() as s:
        otp = s.execute(text("SELECT code_hash, expires_at - created_at AS ttl FROM holder_otps")).one()
    assert otp_from(sms).encode() not in bytes(otp.code_hash) and otp.ttl == timedelta(minutes=5)
    assert balance_of(card.card_id) == 500000  # nothing is debited before the code is confirmed


def test_the_right_code_exchanges_the_card_online_through_the_partner_engine(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    asked = ask(client, path, "KITAP-CERT-2500")
    (otp_sms,) = deliver_notices(tmp_path)
    done = confirm(client, path, asked.text, otp_from(otp_sms))
    assert done.status_code == 200 and 'id="done"' in done.text
    assert "2\u00a0500\u00a0₸" in re.search(r'id="new-balance">([^<]+)<', done.text).group(1)
    assert balance_of(card.card_id) == 250000
    with new_session() as s:
        exchange = s.execute(text("SELECT channel, api_key_id, amount_minor FROM exchanges")).one()
        record = s.execute(
            text(
                "SELECT type, channel, face_value_minor, vat_rate_bp FROM reconciliation_records"
                " WHERE type = 'exchange'"
            )
        ).one()
        webhook = s.execute(
            text("SELECT payload FROM webhook_events WHERE type = 'card.exchanged'")
        ).scalar_one()
        events = list(s.execute(text("SELECT event FROM holder_events ORDER BY id")).scalars())
    assert exchange == ("online", None, 250000)
    assert record.channel == "online" and record.face_value_minor == 250000 and record.vat_rate_bp > 0
    assert webhook["data"]["channel"] == "online"
    assert events == ["otp_sent", "exchanged"]
    certificate_sms = deliver_notices(tmp_path)[-1]
    assert certificate_sms["to"] == otp_sms["to"]
    code = re.search(r'id="certificate-code" aria-labelledby="certificate-label">([^<]+)<', done.text).group(
        1
    )
    assert code in certificate_sms["text"]


def test_a_second_submit_of_a_used_code_shows_the_same_exchange_and_debits_once(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    asked = ask(client, path, "ARAY-CERT-1000")
    code = otp_from(deliver_notices(tmp_path)[0])
    first = confirm(client, path, asked.text, code)
    second = confirm(client, path, asked.text, code)
    assert 'id="done"' in first.text and 'id="done"' in second.text
    pick = re.compile(r'id="certificate-code" aria-labelledby="certificate-label">([^<]+)<')
    assert pick.search(first.text).group(1) == pick.search(second.text).group(1)
    assert balance_of(card.card_id) == 400000
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM exchanges")).scalar_one() == 1


def test_three_wrong_codes_use_the_code_up_and_change_nothing(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    asked = ask(client, path, "ARAY-CERT-1000")
    right = otp_from(deliver_notices(tmp_path)[0])
    wrong = "000000" if right != "000000" else "111111"
    answers = [confirm(client, path, asked.text, wrong) for _ in range(3)]
    assert "Осталось попыток: 2" in answers[0].text and "Осталось попыток: 1" in answers[1].text
    assert "неверно 3 раза" in answers[2].text and 'name="code"' not in answers[2].text
    late = confirm(client, path, asked.text, right)  # even the right code is refused now
    assert 'id="done"' not in late.text and "неверно 3 раза" in late.text
    assert balance_of(card.card_id) == 500000
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM exchanges")).scalar_one() == 0
        assert s.execute(text("SELECT attempts FROM holder_otps")).scalar_one() == 3


def test_a_code_is_bound_to_its_certificate_and_amount(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    for_cinema = ask(client, path, "ARAY-CERT-1000")
    cinema_code = otp_from(deliver_notices(tmp_path)[0])
    for_books = ask(client, path, "KITAP-CERT-2500")
    answer = confirm(client, path, for_books.text, cinema_code)  # the other exchange's code
    assert 'id="done"' not in answer.text and "Осталось попыток: 2" in answer.text
    assert 'id="done"' in confirm(client, path, for_cinema.text, cinema_code).text
    assert balance_of(card.card_id) == 400000


def test_an_expired_code_is_refused(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    asked = ask(client, path, "ARAY-CERT-1000")
    code = otp_from(deliver_notices(tmp_path)[0])
    with transaction() as s:
        s.execute(text("UPDATE holder_otps SET expires_at = now() - interval '1 second'"))
    answer = confirm(client, path, asked.text, code)
    assert "Срок действия кода истёк" in answer.text and balance_of(card.card_id) == 500000


def test_at_most_three_codes_an_hour_per_card(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    answers = [ask(client, path, "ARAY-CERT-1000") for _ in range(4)]
    assert all('name="code"' in a.text for a in answers[:3])
    assert 'name="code"' not in answers[3].text and "не больше 3 кодов в час" in answers[3].text
    assert len(deliver_notices(tmp_path)) == 3


@pytest.mark.parametrize(
    ("setup", "sku", "message"),
    [
        ("UPDATE cards SET balance_minor = 100000", "KITAP-CERT-2500", "недостаточно средств"),
        ("UPDATE cards SET status = 'blocked'", "ARAY-CERT-1000", "Карта заблокирована"),
        (
            "UPDATE codes SET status = 'voided'"
            " WHERE product_id = (SELECT id FROM products WHERE sku = 'KITAP-CERT-2500')",
            "KITAP-CERT-2500",
            "закончились",
        ),
    ],
    ids=["insufficient-balance", "blocked", "out-of-stock"],
)
def test_an_impossible_exchange_gets_a_clear_message_and_sends_no_code(
    client, keys, tmp_path, setup, sku, message
):
    card, path = card_reward(client, keys)
    page = client.get(path)
    with transaction() as s:
        s.execute(text(setup))
    answer = client.post(path + "/exchange", data={"sku": sku, "form": form_of(page.text)})
    assert message in answer.text and 'role="alert"' in answer.text and 'name="code"' not in answer.text
    assert deliver_notices(tmp_path) == []
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM holder_otps")).scalar_one() == 0


@pytest.mark.parametrize("locale", ["kk", "en"])
@pytest.mark.parametrize(
    ("setup", "sku", "key"),
    [
        ("UPDATE cards SET balance_minor = 100000", "KITAP-CERT-2500", "problem.insufficient_balance"),
        ("UPDATE cards SET status = 'blocked'", "ARAY-CERT-1000", "problem.card_blocked"),
        (
            "UPDATE codes SET status = 'voided'"
            " WHERE product_id = (SELECT id FROM products WHERE sku = 'KITAP-CERT-2500')",
            "KITAP-CERT-2500",
            "problem.out_of_stock",
        ),
    ],
    ids=["insufficient-balance", "blocked", "out-of-stock"],
)
def test_a_refused_exchange_is_explained_in_the_holders_language(
    client, keys, tmp_path, locale, setup, sku, key
):
    from service.holders.texts import translate

    card, path = card_reward(client, keys)
    page = client.get(path, headers={"Accept-Language": locale})
    with transaction() as s:
        s.execute(text(setup))
    answer = client.post(
        path + "/exchange",
        data={"sku": sku, "form": form_of(page.text)},
        headers={"Accept-Language": locale},
    )
    assert translate(locale, key) in answer.text.replace("&#39;", "'") and 'name="code"' not in answer.text
    expected = 100000 if "balance_minor" in setup else 500000
    assert balance_of(card.card_id) == expected and deliver_notices(tmp_path) == []


@pytest.mark.parametrize("locale", ["kk", "en"])
def test_a_wrong_and_an_expired_one_time_code_are_explained_in_the_holders_language(
    client, keys, tmp_path, locale
):
    from service.holders.texts import translate

    card, path = card_reward(client, keys)
    page = client.get(path, headers={"Accept-Language": locale})
    asked = client.post(
        path + "/exchange",
        data={"sku": "ARAY-CERT-1000", "form": form_of(page.text)},
        headers={"Accept-Language": locale},
    )
    code = otp_from(deliver_notices(tmp_path)[0])
    action = re.search(r'action="(/r/[^"]+/exchange/[0-9a-f\-]+)"', asked.text).group(1)

    def submit(value: str):
        return client.post(
            action, data={"code": value, "form": form_of(asked.text)}, headers={"Accept-Language": locale}
        ).text.replace("&#39;", "'")

    wrong = "000000" if code != "000000" else "111111"
    assert translate(locale, "otp.wrong", left=2) in submit(wrong)
    with transaction() as s:
        s.execute(text("UPDATE holder_otps SET expires_at = now() - interval '1 second'"))
    assert translate(locale, "otp.expired") in submit(code)
    assert balance_of(card.card_id) == 500000


def test_an_exchange_that_became_impossible_after_the_code_was_sent_changes_nothing(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    import_codes_for("DALA-CERT-5000", 1)
    asked = ask(client, path, "DALA-CERT-5000")
    code = otp_from(deliver_notices(tmp_path)[0])
    with transaction() as s:
        s.execute(text("UPDATE cards SET balance_minor = 100000"))
    answer = confirm(client, path, asked.text, code)
    assert "недостаточно средств" in answer.text and balance_of(card.card_id) == 100000
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM exchanges")).scalar_one() == 0
        assert s.execute(text("SELECT used_at FROM holder_otps")).scalar_one() is None


def test_once_a_cards_expiry_has_passed_its_page_says_so_and_nothing_can_be_exchanged(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    form = form_of(client.get(path).text)
    with transaction() as s:
        s.execute(
            text("UPDATE cards SET expires_at = now() - interval '1 day' WHERE id = :id"),
            {"id": card.card_id},
        )
    page = client.get(path)
    assert page.status_code == 410 and 'name="sku"' not in page.text and card.number[-4:] not in page.text
    asked = client.post(path + "/exchange", data={"sku": "ARAY-CERT-1000", "form": form})
    assert asked.status_code == 410 and 'name="code"' not in asked.text
    assert deliver_notices(tmp_path) == [] and balance_of(card.card_id) == 500000
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM holder_otps")).scalar_one() == 0
        assert s.execute(text("SELECT count(*) FROM exchanges")).scalar_one() == 0


def test_a_code_sent_for_one_card_exchanges_nothing_on_another_cards_page(client, keys, tmp_path):
    first, first_path = card_reward(client, keys)
    second, second_path = card_reward(client, keys)
    asked = ask(client, first_path, "ARAY-CERT-1000")
    code = otp_from(deliver_notices(tmp_path)[0])
    otp_id = re.search(r'action="/r/[^"]+/exchange/([0-9a-f\-]+)"', asked.text).group(1)
    second_form = form_of(client.get(second_path).text)
    answer = client.post(f"{second_path}/exchange/{otp_id}", data={"code": code, "form": second_form})
    assert 'id="done"' not in answer.text
    assert balance_of(first.card_id) == balance_of(second.card_id) == 500000
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM exchanges")).scalar_one() == 0
        assert s.execute(text("SELECT used_at, attempts FROM holder_otps")).one() == (None, 0)
    assert 'id="done"' in confirm(client, first_path, asked.text, code).text  # still good on its own card


def test_a_code_is_refused_when_the_certificates_face_value_changed_since_it_was_sent(client, keys, tmp_path):
    from service.catalog.snapshot import invalidate_snapshot

    card, path = card_reward(client, keys)
    asked = ask(client, path, "ARAY-CERT-1000")
    code = otp_from(deliver_notices(tmp_path)[0])
    with transaction() as s:
        s.execute(text("UPDATE products SET face_value_minor = 150000 WHERE sku = 'ARAY-CERT-1000'"))
    invalidate_snapshot()
    try:
        answer = confirm(client, path, asked.text, code)
        assert 'id="done"' not in answer.text and balance_of(card.card_id) == 500000
        with new_session() as s:
            assert s.execute(text("SELECT count(*) FROM exchanges")).scalar_one() == 0
            assert s.execute(text("SELECT used_at FROM holder_otps")).scalar_one() is None
    finally:
        with transaction() as s:
            s.execute(text("UPDATE products SET face_value_minor = 100000 WHERE sku = 'ARAY-CERT-1000'"))
        invalidate_snapshot()


def test_a_certificate_in_the_history_stays_behind_show(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    asked = ask(client, path, "ARAY-CERT-1000")
    confirm(client, path, asked.text, otp_from(deliver_notices(tmp_path)[0]))
    page = client.get(path, headers={"Accept-Language": "en"})
    assert "online" in page.text and 'id="history-certificate' not in page.text
    action = re.search(r'action="(/r/[^"]+/certificates/[0-9a-f\-]+)"', page.text).group(1)
    shown = client.post(action, data={"form": form_of(page.text)})
    assert 'id="history-certificate-code"' in shown.text and "data:image/svg+xml" in shown.text


def test_the_partner_settlement_shows_the_online_exchanges(client, keys, tmp_path):
    card, path = card_reward(client, keys)
    asked = ask(client, path, "ARAY-CERT-1000")
    confirm(client, path, asked.text, otp_from(deliver_notices(tmp_path)[0]))
    period = datetime.now(UTC).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Almaty")).strftime("%Y-%m")
    settlement = client.get(f"/v1/settlements/aray-cinema?period={period}", headers=keys.header("finance"))
    assert settlement.status_code == 200, settlement.text
    (line,) = [p for p in settlement.json()["products"] if p["sku"] == "ARAY-CERT-1000"]
    assert line["exchanged"]["count"] == 1 and line["exchanged_online"]["count"] == 1


# --- /card --------------------------------------------------------------------------------------


def open_card(client, number: str, pin: str):
    form = client.get("/card")
    token = re.search(r'name="form" value="([^"]+)"', form.text).group(1)
    return client.post("/card", data={"number": number, "pin": pin, "form": token}, follow_redirects=False)


def test_a_cards_number_and_pin_lead_to_its_own_page(client, keys):
    card, path = card_reward(client, keys)
    opened = open_card(client, card.number, card.pin)
    assert opened.status_code == 303 and opened.headers["location"] == path


def test_card_entry_follows_the_cards_lockout(client, keys):
    card, path = card_reward(client, keys)
    answers = [open_card(client, card.number, "0000" if card.pin != "0000" else "1111") for _ in range(5)]
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 423]
    assert "Осталось попыток: 4" in answers[0].text and "заблокирована" in answers[4].text
    locked = open_card(client, card.number, card.pin)  # the right PIN too, while this address waits
    assert locked.status_code == 423
    verify = client.post(
        "/v1/cards/verify", json={"number": card.number, "pin": card.pin}, headers=keys.header("partner")
    )
    assert verify.status_code == 200  # another client (a partner's till) is not held back by this address
    assert client.get(path).status_code == 200  # the holder's own link still opens


def test_an_unknown_card_number_says_no_more_than_a_wrong_pin(client, keys):
    answer = open_card(client, "9" * 16, "1234")
    assert answer.status_code == 422 and "Номер или ПИН не подходят." in answer.text


def test_an_unknown_card_number_gets_the_very_page_a_wrong_pin_gets(client, keys):
    card, _ = card_reward(client, keys)
    wrong_pin = "0000" if card.pin != "0000" else "1111"
    unknown = open_card(client, "9" * len(card.number), wrong_pin)
    flush_limits()
    with transaction() as s:  # each answer as a first failure from this address
        s.execute(text("DELETE FROM auth_throttle"))
    known = open_card(client, card.number, wrong_pin)

    def without_form_token(html: str) -> str:
        return re.sub(r'name="form" value="[^"]+"', "", html)

    assert unknown.status_code == known.status_code == 422
    assert without_form_token(unknown.text) == without_form_token(known.text)


def test_card_entry_without_its_form_cookie_is_refused(client, keys):
    card, _ = card_reward(client, keys)
    client.cookies.clear()
    answer = client.post(
        "/card", data={"number": card.number, "pin": card.pin, "form": "x"}, follow_redirects=False
    )
    assert answer.status_code == 403


# --- logs ---------------------------------------------------------------------------------------


def test_tokens_and_one_time_codes_never_reach_the_logs(client, keys, tmp_path):
    import io
    import logging

    from service.kit.observability.logging import formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(json=True))  # the service's own formatter, with its masking
    logging.getLogger().addHandler(handler)
    try:
        card, path = card_reward(client, keys)
        asked = ask(client, path, "ARAY-CERT-1000")
        code = otp_from(deliver_notices(tmp_path)[0])
        confirm(client, path, asked.text, code)
        client.get(path + "?lang=en")
        open_card(client, card.number, "0000" if card.pin != "0000" else "1111")
    finally:
        logging.getLogger().removeHandler(handler)
    logged = stream.getvalue()
    token = path.rsplit("/", 1)[1]
    assert "/r/****" in logged
    assert token not in logged and f"#{code}" not in logged and card.number not in logged
    assert "holder_otp_sent" in logged and "card_wrong_pin" in logged  # the lines are there, masked


def test_every_word_a_holder_template_uses_is_there_in_russian_kazakh_and_english():
    from pathlib import Path

    from service.holders.texts import MESSAGES

    folder = Path(__file__).parent.parent / "service" / "holders" / "templates"
    used = set()
    for template in folder.glob("*.html"):
        used |= set(re.findall(r"""\bt\(['"]([\w.]+\w)['"]""", template.read_text()))
    used |= {f"card.status.{s}" for s in ("active", "exhausted", "expired", "blocked", "cancelled")}
    used |= {"card.channel.online", "card.channel.partner"}
    assert used - set(MESSAGES) == set()
    assert all(len(entry) == 3 and all(entry) for entry in MESSAGES.values())


def test_a_sandbox_keys_reward_has_its_page_with_the_test_code(client, keys):
    from service.auth.service import create_key
    from service.sandbox.service import sandbox_code

    with transaction() as s:
        keys.sandbox = create_key(
            s, role="loyalty", name="crm-staging", programs=["mobile-bonus"], sandbox=True
        ).key
    made = post_redemption(client, keys, role="sandbox")
    assert made.status_code == 201, made.text
    path = path_of(made.json()["reward_url"])
    shown = client.post(path + "/show", data={"form": form_of(client.get(path).text)})
    assert sandbox_code(uuid.UUID(made.json()["id"])) in shown.text


def test_without_public_url_there_is_no_link_and_the_sms_has_no_trailing_space(
    client, keys, monkeypatch, tmp_path
):
    import json

    from service.kit.config import reset_settings_cache
    from tests.console.scenario import send_sms

    monkeypatch.delenv("PUBLIC_URL")
    reset_settings_cache()
    made = code_reward(client, keys)
    assert made["reward_url"] is None
    send_sms(made["id"], tmp_path)
    (sms,) = [json.loads(line) for line in (tmp_path / "sms.jsonl").read_text().splitlines()]
    assert sms["text"].endswith(".") and "/r/" not in sms["text"]


def test_receipts_settle_the_notices_that_no_reward_sms_owns(client, keys, tmp_path):
    from service.delivery.providers import Receipt
    from service.delivery.service import apply_receipts

    card, path = card_reward(client, keys)
    ask(client, path, "ARAY-CERT-1000")
    ask(client, path, "KITAP-CERT-2500")
    first, second = deliver_notices(tmp_path)
    errors = apply_receipts(
        "file",
        [Receipt(first["message_id"], "DELIVRD", None), Receipt(second["message_id"], "UNDELIV", None)],
    )
    assert errors == [None, None]
    with new_session() as s:
        statuses = s.execute(text("SELECT status FROM sms_notices ORDER BY id")).scalars().all()
    assert statuses == ["delivered", "failed"]
    unknown = apply_receipts("file", [Receipt("no-such-id", "DELIVRD", None)])
    assert type(unknown[0]).__name__ == "ReceiptTooEarly"  # still unknown: the provider offers it again
