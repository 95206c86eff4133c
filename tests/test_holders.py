"""The holders' reward page (/r/<token>) and card entry (/card), through the app as a browser uses
it (forms, cookies), with state built by the API and the domain functions."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session
from tests.conftest import import_codes_for, post_redemption

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
            text(
                "SELECT r.revealed_at, c.status FROM codes c JOIN redemptions r ON r.code_id = c.id"
            )
        ).one()
    assert code.revealed_at is None and code.status == "reserved"
    assert 'id="revealed' not in html
    cancel = client.post(f"/v1/redemptions/{made['id']}/cancel", headers=keys.header("loyalty"))
    assert cancel.status_code == 200  # a GET did not count as exposure
