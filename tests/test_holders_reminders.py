"""The expiry reminder: one SMS with the reward page's link 30 days before a card that still has a
balance expires, for programs that turned it on, outside their quiet hours, on the bulk queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session, transaction
from service.kit.values.zones import zone
from tests.test_cards import issue_card

ALMATY = zone("Asia/Almaty")
NOON = datetime(2027, 3, 10, 12, 0, tzinfo=ALMATY).astimezone(UTC)  # outside 21:00-09:00
NIGHT = datetime(2027, 3, 10, 23, 0, tzinfo=ALMATY).astimezone(UTC)


@pytest.fixture(autouse=True)
def public_url(monkeypatch):
    from service.kit.config import reset_settings_cache

    monkeypatch.setenv("PUBLIC_URL", "https://r.example.kz")
    reset_settings_cache()
    yield
    reset_settings_cache()


def expiring(client, keys, *, days: float, at: datetime, **overrides):
    card = issue_card(client, keys, **overrides)
    with transaction() as s:
        s.execute(
            text("UPDATE cards SET expires_at = :at WHERE id = :id"),
            {"at": at + timedelta(days=days), "id": card.card_id},
        )
    return card


def remind(at: datetime) -> int:
    from service.holders.reminders import remind_expiring_cards

    with transaction() as s:
        return remind_expiring_cards(s, at)


def notices() -> list:
    with new_session() as s:
        return s.execute(
            text("SELECT redemption_id, kind, bulk, msisdn, locale, status FROM sms_notices")
        ).all()


def outbox_queues() -> list[str]:
    with new_session() as s:
        return list(s.execute(text("SELECT queue FROM outbox WHERE actor LIKE '%notice%'")).scalars())


def text_of(notice_id: int) -> str:
    from service.delivery.notices import CONTEXT
    from service.kit.security.crypto import get_vault

    with new_session() as s:
        row = s.execute(
            text("SELECT text_enc, key_id FROM sms_notices WHERE id = :id"), {"id": notice_id}
        ).one()
    return get_vault().decrypt(bytes(row.text_enc), CONTEXT, row.key_id)


def test_a_card_with_a_balance_is_reminded_once_30_days_before_it_expires(client, keys):
    card = expiring(client, keys, days=20, at=NOON, locale="kk")
    assert remind(NOON) == 1
    assert remind(NOON + timedelta(minutes=1)) == 0  # once
    (notice,) = notices()
    assert (str(notice.redemption_id), notice.kind, notice.bulk) == (card.redemption_id, "reminder", True)
    assert outbox_queues() == ["sms_bulk"]
    body = text_of(1)
    url = client.get(f"/v1/redemptions/{card.redemption_id}", headers=keys.header("loyalty")).json()[
        "reward_url"
    ]
    assert url in body and "Айырбастау" in body and "5 000 ₸" in body  # the program's kk template


def test_no_reminder_in_quiet_hours_and_it_comes_when_they_end(client, keys):
    expiring(client, keys, days=20, at=NIGHT)
    assert remind(NIGHT) == 0
    morning = datetime(2027, 3, 11, 9, 0, tzinfo=ALMATY).astimezone(UTC)
    assert remind(morning) == 1


@pytest.mark.parametrize(
    ("days", "overrides", "setup"),
    [
        (45, {}, None),  # not yet within 30 days
        (
            20,
            {"offer": "gift-card-10000", "program": "home-internet", "tariff": "home-500", "points": 10000},
            None,
        ),
        (20, {}, "UPDATE cards SET balance_minor = 0, status = 'exhausted'"),
        (20, {}, "UPDATE cards SET status = 'blocked'"),
    ],
    ids=["too-early", "program-without-reminders", "used-up", "blocked"],
)
def test_no_reminder_for_cards_that_do_not_need_one(client, keys, days, overrides, setup):
    from service.auth.service import create_key

    if overrides.get("program") == "home-internet":
        with transaction() as s:
            keys.loyalty = create_key(s, role="loyalty", name="home", programs=["home-internet"]).key
    expiring(client, keys, days=days, at=NOON, **overrides)
    if setup:
        with transaction() as s:
            s.execute(text(setup))
    assert remind(NOON) == 0 and notices() == []


def test_a_reminder_whose_send_falls_in_quiet_hours_waits_for_them_to_end(client, keys, tmp_path):
    from service.delivery.notices import NoticeLater, deliver_notice
    from service.delivery.providers import FileProvider

    expiring(client, keys, days=20, at=NOON)
    remind(NOON)
    provider = FileProvider(tmp_path / "sms.jsonl")
    with pytest.raises(NoticeLater) as later:
        deliver_notice(1, provider=provider, now=NIGHT)
    assert later.value.at == datetime(2027, 3, 11, 9, 0, tzinfo=ALMATY)
    assert not (tmp_path / "sms.jsonl").exists()
    assert deliver_notice(1, provider=provider, now=later.value.at) == "sent"
    assert "https://r.example.kz/r/" in (tmp_path / "sms.jsonl").read_text()


def test_the_housekeeping_queues_the_reminders(client, keys):
    from workers.housekeeping import housekeeping

    now = datetime.now(UTC)
    expiring(client, keys, days=10, at=now)
    local = now.astimezone(ALMATY).time()
    expected = 0 if (local.hour >= 21 or local.hour < 9) else 1  # the demo's quiet hours
    assert housekeeping()["expiry_reminders"] == expected
