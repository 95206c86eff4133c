"""Campaign SMS on their own channel (issue 27): the bulk account when there is one, their own rate cap
within the account's when there is none, the reward SMS first, quiet hours on the program's zone, and
opted-out subscribers. Real parties on loopback: a test SMSC (or HTTP gateway), the outbox relay in
this process and a Dramatiq worker process; the campaign's runner steps run here."""

from __future__ import annotations

import collections
import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.delivery.smsc import TestSmsc
from service.kit.db.engine import new_session, transaction
from tests.conftest import import_codes_for, post_redemption
from tests.harness.delivery import Worker, flush_queues, statuses, wait_until
from tests.test_campaigns import PHONES, approved, run_all
from tests.test_campaigns import approver as approver  # noqa: F401  (a fixture)
from tests.test_delivery_http import Gateway

ALMATY = "Asia/Almaty"
REWARD_PHONE = "87019990000"  # +77019990000, never one of the campaign's PHONES


def _quiet_hours(window: str | None) -> None:
    from service.catalog.snapshot import invalidate_snapshot

    with transaction() as s:
        s.execute(
            text("UPDATE programs SET quiet_hours = :w, timezone = :z WHERE code = 'mobile-bonus'"),
            {"w": window, "z": ALMATY},
        )
    invalidate_snapshot()


def _window_around_now(inside: bool) -> tuple[str, datetime]:
    """Quiet hours on Almaty's wall clock that hold now (inside) or lie well away from it, and when an
    inside window ends (UTC, to the minute)."""
    from service.kit.values.zones import zone

    local = datetime.now(UTC).astimezone(zone(ALMATY)).replace(second=0, microsecond=0)
    start, end = (
        (local - timedelta(hours=1), local + timedelta(hours=1))
        if inside
        else (
            local + timedelta(hours=3),
            local + timedelta(hours=4),
        )
    )
    return f"{start:%H:%M}-{end:%H:%M}", end.astimezone(UTC)


class Channel:
    """The relay here and one worker process (every queue, like the delivery tests) on `env`."""

    def __init__(self, env: dict[str, str]):
        from workers.broker import broker
        from workers.relay import Relay

        flush_queues()
        self.relay = Relay(broker).start()
        self.worker = Worker(env).start()

    def stop(self) -> None:
        self.worker.stop()
        self.relay.stop()


def _smpp_env(smsc: TestSmsc, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SMS_PROVIDER": "smpp",
        "SMPP_HOST": smsc.host,
        "SMPP_PORT": str(smsc.port),
        "SMPP_SYSTEM_ID": "rewards",
        "SMPP_PASSWORD": "secret",
        "SMS_IN_DOUBT_SECONDS": "10",
        "DRAMATIQ_HEARTBEAT_TIMEOUT_MS": "5000",
        "DRAMATIQ_MAINTENANCE_CHANCE": "200000",
        "LOG_LEVEL": os.environ.get("WORKER_LOG_LEVEL", "WARNING"),
        **extra,
    }


@pytest.fixture
def smsc():
    server = TestSmsc().start()
    yield server
    server.stop()


@pytest.fixture
def channel():
    made: list[Channel] = []

    def start(env: dict[str, str]) -> Channel:
        made.append(Channel(env))
        return made[-1]

    yield start
    for c in made:
        c.stop()


def _campaign(client, keys, approver: str, n: int, **overrides) -> dict:  # noqa: F811
    import_codes_for("ARAY-CINEMA-2000", n + 2)
    campaign = approved(client, keys, approver, n, **overrides)
    run_all(campaign["id"])
    return campaign


def _redemption_of(phone: str) -> str:
    with new_session() as s:
        return str(s.execute(text("SELECT id FROM redemptions WHERE msisdn = :m"), {"m": phone}).scalar_one())


def _sessions_of(smsc: TestSmsc, system_id: str) -> set[int]:
    return {b.session for b in smsc.binds if b.system_id == system_id}


def _accepted(smsc: TestSmsc) -> list:
    return [s for s in smsc.seen if s.answer == "ok"]


# --- the bulk account --------------------------------------------------------------------------------


def test_with_a_bulk_bind_campaign_sms_go_on_it_and_reward_sms_on_the_transactional_bind(
    client, keys, approver, smsc, channel
):
    _quiet_hours(_window_around_now(inside=False)[0])  # a window, but not now
    channel(_smpp_env(smsc, SMPP_BULK_SYSTEM_ID="rewards-bulk", SMPP_BULK_PASSWORD="bulk-secret"))
    wait_until(lambda: smsc.bound_sessions > 0, 30, what="the worker to bind")
    _campaign(client, keys, approver, 2)
    assert post_redemption(client, keys, msisdn=REWARD_PHONE).status_code == 201
    wait_until(lambda: len(smsc.received) == 3, 30, what="three SMS at the SMSC")
    bulk, transactional = _sessions_of(smsc, "rewards-bulk"), _sessions_of(smsc, "rewards")
    assert bulk and transactional and not bulk & transactional
    by_phone = {s.to: s.session for s in _accepted(smsc)}
    assert {by_phone[PHONES[0]], by_phone[PHONES[1]]} <= bulk
    assert by_phone["+77019990000"] in transactional
    # the receipts of the campaign's SMS come back on the bulk bind and deliver them
    wait_until(lambda: statuses().get("delivered") == 3, 30, what="all three delivered")


def test_with_a_bulk_token_campaign_sms_go_to_the_gateway_with_it(client, keys, approver, channel):
    _quiet_hours(None)
    gateway = Gateway()
    try:
        env = {
            **os.environ,
            "SMS_PROVIDER": "http",
            "SMS_HTTP_URL": gateway.url,
            "SMS_HTTP_TOKEN": "gw-token",
            "SMS_HTTP_BULK_TOKEN": "gw-bulk-token",
            "LOG_LEVEL": "WARNING",
        }
        channel(env)
        _campaign(client, keys, approver, 1)
        assert post_redemption(client, keys, msisdn=REWARD_PHONE).status_code == 201
        wait_until(lambda: len(gateway.requests) == 2, 40, what="two SMS at the gateway")
        auth = {r["body"]["to"]: r["auth"] for r in gateway.requests}
        assert auth == {PHONES[0]: "Bearer gw-bulk-token", "+77019990000": "Bearer gw-token"}
    finally:
        gateway.server.shutdown()


@pytest.mark.parametrize(
    ("env", "bulk"),
    [
        ({"SMS_PROVIDER": "http", "SMS_HTTP_BULK_TOKEN": "k"}, True),
        ({"SMS_PROVIDER": "http", "SMS_HTTP_BULK_TOKEN": ""}, False),
        ({"SMS_PROVIDER": "smpp", "SMPP_BULK_SYSTEM_ID": "rewards-bulk"}, True),
        ({"SMS_PROVIDER": "smpp", "SMPP_BULK_SYSTEM_ID": ""}, False),
        ({"SMS_PROVIDER": "file", "SMS_HTTP_BULK_TOKEN": "k"}, False),
    ],
)
def test_an_empty_bulk_setting_is_no_bulk_account(monkeypatch, env, bulk):
    from service.delivery.providers import has_bulk_account
    from service.kit.config import reset_settings_cache

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    try:
        assert has_bulk_account() is bulk
    finally:
        monkeypatch.undo()
        reset_settings_cache()


# --- one account: the bulk cap, and the reward SMS first ----------------------------------------------


def _redis_second_of(monotonic_at: float) -> int:
    """The Redis second (the rate limiter's clock) a monotonic instant of this machine falls in."""
    from workers.broker import broker

    seconds, micros = broker.client.time()
    offset = seconds + micros / 1e6 - time.monotonic()
    return int(monotonic_at + offset)


def test_without_a_bulk_account_campaign_sms_share_it_and_never_exceed_the_bulk_cap(
    client, keys, approver, smsc, channel
):
    _quiet_hours(None)
    channel(_smpp_env(smsc, SMS_BULK_RATE_LIMIT="3"))
    wait_until(lambda: smsc.bound_sessions > 0, 30, what="the worker to bind")
    _campaign(client, keys, approver, 12)
    wait_until(lambda: len(smsc.received) == 12, 60, what="the campaign's 12 SMS")
    assert {b.system_id for b in smsc.binds} == {"rewards"}  # the one account
    accepted = _accepted(smsc)
    per_second = collections.Counter(_redis_second_of(s.at) for s in accepted)
    assert max(per_second.values()) <= 3, per_second
    # 12 PDUs or more at 3 a second take at least four seconds of the limiter's clock
    assert len(per_second) >= len(accepted) / 3


def test_a_reward_sms_is_not_queued_behind_a_campaigns_bulk_backlog(client, keys, approver, smsc, channel):
    _quiet_hours(None)
    channel(_smpp_env(smsc, SMS_BULK_RATE_LIMIT="2"))
    wait_until(lambda: smsc.bound_sessions > 0, 30, what="the worker to bind")
    _campaign(client, keys, approver, 20)  # ten seconds of bulk SMS at 2 a second
    wait_until(lambda: len(smsc.received) >= 2, 30, what="the campaign's SMS to start")
    assert post_redemption(client, keys, msisdn=REWARD_PHONE).status_code == 201
    posted_after = len(smsc.received)
    wait_until(lambda: any(s.to == "+77019990000" for s in smsc.received), 30, what="the reward SMS")
    campaign_before = sum(1 for s in smsc.received if s.to != "+77019990000")
    # it went next, or next but one (a bulk SMS already granted its slot may go first), not after the
    # backlog that had been fetched and was waiting for the bulk cap
    assert campaign_before - posted_after <= 2, (posted_after, campaign_before)
    wait_until(lambda: len(smsc.received) == 21, 60, what="the rest of the campaign")


# --- quiet hours -------------------------------------------------------------------------------------


def _delayed(queue: str) -> list[dict]:
    from workers.broker import broker

    raw = broker.client.hvals(f"{broker.namespace}:{queue}.DQ.msgs")
    return [json.loads(m) for m in raw]


def test_a_campaign_sms_in_quiet_hours_is_held_until_the_window_ends_and_a_reward_sms_is_not(
    client, keys, approver, smsc, channel
):
    window, ends = _window_around_now(inside=True)
    _quiet_hours(window)
    channel(_smpp_env(smsc))
    wait_until(lambda: smsc.bound_sessions > 0, 30, what="the worker to bind")
    _campaign(client, keys, approver, 1)
    line = _redemption_of(PHONES[0])

    def held() -> list[dict]:
        return [m for m in _delayed("sms_bulk") if m["actor_name"] == "deliver_campaign_sms"]

    wait_until(lambda: bool(held()), 30, what="the campaign SMS to be delayed")
    (message,) = held()
    assert message["args"][0] == line
    eta = datetime.fromtimestamp(message["options"]["eta"] / 1000, UTC)
    assert ends <= eta <= ends + timedelta(minutes=2), (eta, ends)
    # a reward SMS in the same quiet hours goes at once
    assert post_redemption(client, keys, msisdn=REWARD_PHONE).status_code == 201
    wait_until(lambda: len(smsc.received) == 1, 30, what="the reward SMS")
    time.sleep(0.5)
    assert {s.to for s in smsc.seen} == {"+77019990000"}  # no submit_sm for the line
    with new_session() as s:
        status = s.execute(text("SELECT status FROM redemptions WHERE id = :id"), {"id": line}).scalar_one()
    assert status == "accepted"


# --- opt-outs ----------------------------------------------------------------------------------------


def test_an_opted_out_line_gets_its_reward_and_no_sms_and_its_page_link_stays_in_the_api(
    client, keys, approver, smsc, channel, monkeypatch
):
    from service.kit.config import reset_settings_cache

    monkeypatch.setenv("PUBLIC_URL", "https://r.example.kz")  # reward pages' links exist
    reset_settings_cache()
    _quiet_hours(None)
    response = client.post(
        "/v1/programs/mobile-bonus/bulk-opt-outs",
        json={"msisdns": [PHONES[0]]},
        headers=keys.header("loyalty"),
    )
    assert response.status_code == 200, response.text
    channel(_smpp_env(smsc))
    wait_until(lambda: smsc.bound_sessions > 0, 30, what="the worker to bind")
    _campaign(client, keys, approver, 2)
    wait_until(lambda: len(smsc.received) == 1, 30, what="the other line's SMS")
    time.sleep(0.5)
    assert {s.to for s in smsc.seen} == {PHONES[1]}
    opted_out = _redemption_of(PHONES[0])
    body = client.get(f"/v1/redemptions/{opted_out}", headers=keys.header("loyalty")).json()
    assert body["status"] == "failed" and body["status_reason"] == "bulk_opt_out", body
    assert body["reward"] is not None  # granted: the code is the subscriber's
    assert body["reward_url"] and body["reward_url"].startswith("https://r.example.kz/r/")
    page = client.get(body["reward_url"].removeprefix("https://r.example.kz"))
    assert page.status_code == 200
    reset_settings_cache()
