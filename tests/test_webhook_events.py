"""Webhook events as an integrator meets them: signed by the Standard Webhooks scheme (verified here
with the `standardwebhooks` library, as an integrator would), per-program secrets rotated with an
overlap, the events listed and replayed through the API, and the event types beyond redemptions.
Deliveries go to a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook, WebhookVerificationError

from service.events import webhooks
from service.events.webhooks import deliver_events, format_secret, program_secret, rotate_secret
from service.kit.db.engine import new_session, transaction
from service.kit.security.crypto import derive
from tests.conftest import assert_problem, import_codes_for, post_redemption
from tests.harness.delivery import WebhookReceiver, point_webhooks_at


@pytest.fixture
def receiver(keys):
    server = WebhookReceiver().start()
    point_webhooks_at(server.url)
    webhooks._secrets_cache.clear()
    yield server
    server.stop()


def _event_ids(type_: str | None = None) -> list[uuid.UUID]:
    with new_session() as s:
        return list(
            s.execute(
                text(
                    "SELECT id FROM webhook_events WHERE (CAST(:t AS text) IS NULL OR type = :t)"
                    " ORDER BY created_at, id"
                ),
                {"t": type_},
            ).scalars()
        )


def _cancelled_event(client, keys) -> uuid.UUID:
    """A redemption cancelled through the API: its `redemption.cancelled` event."""
    made = post_redemption(client, keys, offer="gift-card-5000", points=5000).json()
    assert (
        client.post(f"/v1/redemptions/{made['id']}/cancel", headers=keys.header("loyalty")).status_code == 200
    )
    (event_id,) = _event_ids("redemption.cancelled")
    return event_id


def _headers(received: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in received["headers"].items()}


# --- signatures ------------------------------------------------------------------------------------


def test_an_event_verifies_with_the_standard_webhooks_library(client, keys, receiver):
    event_id = _cancelled_event(client, keys)
    assert deliver_events([event_id]) == {event_id: "delivered"}
    (received,) = receiver.events
    headers = _headers(received)
    payload = Webhook(format_secret(program_secret("mobile-bonus"))).verify(received["body"], headers)
    assert payload["type"] == "redemption.cancelled" and headers["webhook-id"] == str(event_id)


def test_a_signature_by_another_secret_or_over_another_body_is_refused(client, keys, receiver):
    deliver_events([_cancelled_event(client, keys)])
    (received,) = receiver.events
    headers = _headers(received)
    with pytest.raises(WebhookVerificationError):
        Webhook(format_secret(b"x" * 32)).verify(received["body"], headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(format_secret(program_secret("mobile-bonus"))).verify(received["body"] + b" ", headers)


def test_a_programs_first_secret_is_the_one_earlier_releases_derived_so_integrators_keep_theirs(keys):
    assert program_secret("mobile-bonus") == derive(b"k" * 32, b"webhook/mobile-bonus")
    assert program_secret("mobile-bonus") != program_secret("home-internet")
    with new_session() as s:  # stored encrypted, under the current key
        (secret_enc, key_id) = s.execute(
            text(
                "SELECT s.secret_enc, s.key_id FROM program_webhook_secrets s JOIN programs p"
                " ON p.id = s.program_id WHERE p.code = 'mobile-bonus'"
            )
        ).one()
    assert program_secret("mobile-bonus") not in bytes(secret_enc) and key_id


def test_the_legacy_headers_carry_the_signature_of_earlier_releases(client, keys, receiver):
    deliver_events([_cancelled_event(client, keys)])
    headers = _headers(receiver.events[0])
    expected = hmac.new(
        program_secret("mobile-bonus"),
        f"{headers['rewards-timestamp']}.".encode() + receiver.events[0]["body"],
        hashlib.sha256,
    ).hexdigest()
    assert headers["rewards-signature"] == f"v1={expected}"
    assert headers["rewards-event-id"] == headers["webhook-id"]


def test_the_legacy_headers_can_be_turned_off(client, keys, receiver, monkeypatch):
    from service.kit.config import reset_settings_cache

    monkeypatch.setenv("WEBHOOK_LEGACY_HEADERS", "false")
    reset_settings_cache()
    try:
        deliver_events([_cancelled_event(client, keys)])
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    headers = _headers(receiver.events[0])
    assert "webhook-signature" in headers and not any(h.startswith("rewards-") for h in headers)


def test_during_a_secret_rotation_events_are_signed_by_both_secrets(client, keys, receiver):
    old = program_secret("mobile-bonus")
    new = rotate_secret("mobile-bonus", overlap=timedelta(hours=24))
    assert program_secret("mobile-bonus") == new != old
    deliver_events([_cancelled_event(client, keys)])
    (received,) = receiver.events
    headers = _headers(received)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # whichever the integrator holds right now
        Webhook(format_secret(secret)).verify(received["body"], headers)


def test_after_the_overlap_only_the_new_secret_signs(client, keys, receiver):
    old = program_secret("mobile-bonus")
    new = rotate_secret(
        "mobile-bonus", overlap=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2)
    )
    deliver_events([_cancelled_event(client, keys)])
    (received,) = receiver.events
    headers = _headers(received)
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(format_secret(new)).verify(received["body"], headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(format_secret(old)).verify(received["body"], headers)
    assert headers["rewards-signature"] == webhooks.sign(
        new, int(headers["rewards-timestamp"]), received["body"]
    )


def test_a_new_secret_is_random_and_printed_in_the_whsec_form(keys):
    secret = rotate_secret("business", overlap=timedelta(0))
    assert len(secret) == 32 and secret != derive(b"k" * 32, b"webhook/business")
    assert base64.b64decode(format_secret(secret).removeprefix("whsec_")) == secret


# --- the events API --------------------------------------------------------------------------------


def _list(client, keys, role: str = "support", **params):
    response = client.get("/v1/webhooks/events", params=params, headers=keys.header(role))
    assert response.status_code == 200, response.text
    return response.json()


def test_events_are_listed_newest_first_with_their_delivery_status(client, keys, receiver):
    first = _cancelled_event(client, keys)
    deliver_events([first])
    receiver.failures_left = 1
    made = post_redemption(client, keys, offer="gift-card-5000", points=5000).json()
    client.post(f"/v1/redemptions/{made['id']}/cancel", headers=keys.header("loyalty"))
    second = _event_ids("redemption.cancelled")[-1]
    deliver_events([second])  # answered 503: still pending, one attempt
    items = _list(client, keys)["items"]
    assert [i["id"] for i in items] == [str(second), str(first)]
    assert [i["status"] for i in items] == ["pending", "delivered"]
    assert items[0]["attempts"] == 1 and items[0]["last_attempt"]["status_code"] == 503
    assert items[1]["payload"]["data"]["redemption_id"] and items[1]["program"] == "mobile-bonus"


def test_events_are_filtered_by_status_program_type_and_period(client, keys, receiver):
    event_id = _cancelled_event(client, keys)
    with transaction() as s:  # a given-up event of another program, last month
        s.execute(
            text(
                "INSERT INTO webhook_events (id, program_id, type, payload, created_at, given_up_at)"
                " SELECT :id, id, 'stock.low', '{}'::jsonb, now() - interval '40 days', now()"
                " FROM programs WHERE code = 'home-internet'"
            ),
            {"id": uuid.uuid4()},
        )
    this_month = datetime.now(UTC).astimezone().strftime("%Y-%m")
    assert [i["id"] for i in _list(client, keys, status="pending")["items"]] == [str(event_id)]
    assert [i["type"] for i in _list(client, keys, status="given_up")["items"]] == ["stock.low"]
    assert [i["program"] for i in _list(client, keys, program="home-internet")["items"]] == ["home-internet"]
    assert [i["id"] for i in _list(client, keys, type="redemption.cancelled")["items"]] == [str(event_id)]
    assert [i["id"] for i in _list(client, keys, period=this_month)["items"]] == [str(event_id)]
    assert_problem(
        client.get("/v1/webhooks/events?period=2026-13", headers=keys.header("support")),
        422,
        "validation_error",
    )


def test_the_cursor_pages_through_every_event_once(client, keys):
    for _ in range(5):
        made = post_redemption(client, keys, offer="gift-card-5000", points=5000).json()
        client.post(f"/v1/redemptions/{made['id']}/cancel", headers=keys.header("loyalty"))
    seen, cursor = [], None
    while True:
        page = _list(client, keys, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(str(e) for e in _event_ids()) and len(seen) == 5


def test_a_loyalty_key_sees_and_replays_only_its_programs_events(client, keys):
    event_id = _cancelled_event(client, keys)  # mobile-bonus, the loyalty key's program
    with transaction() as s:
        other = uuid.uuid4()
        s.execute(
            text(
                "INSERT INTO webhook_events (id, program_id, type, payload) SELECT :id, id, 'budget.low',"
                " '{}'::jsonb FROM programs WHERE code = 'business'"
            ),
            {"id": other},
        )
    assert [i["id"] for i in _list(client, keys, role="loyalty")["items"]] == [str(event_id)]
    assert_problem(
        client.post(f"/v1/webhooks/events/{other}/replay", headers=keys.header("loyalty")), 404, "not_found"
    )
    assert_problem(client.get("/v1/webhooks/events", headers=keys.header("partner")), 403, "forbidden")


def test_a_given_up_event_replayed_goes_out_again_under_its_own_id(client, keys, receiver):
    event_id = _cancelled_event(client, keys)
    receiver.failures_left = 1
    assert deliver_events([event_id], now=datetime.now(UTC) + timedelta(hours=25)) == {event_id: "given_up"}
    response = client.post(f"/v1/webhooks/events/{event_id}/replay", headers=keys.header("loyalty"))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending" and response.json()["replays"] == 1
    with new_session() as s:  # queued through the outbox, like any work for the workers
        assert (
            s.execute(
                text("SELECT count(*) FROM outbox WHERE payload->>'event_id' = :id"), {"id": str(event_id)}
            ).scalar_one()
            == 2
        )
    # a new 24-hour window: an hour later it is still retried, not given up at once
    receiver.failures_left = 1
    assert (
        deliver_events([event_id], now=datetime.now(UTC) + timedelta(hours=1))
        .get(event_id)
        .startswith("retry")
    )
    assert deliver_events([event_id]) == {event_id: "delivered"}
    assert receiver.events[-1]["json"]["id"] == str(event_id)
    assert _list(client, keys)["items"][0]["status"] == "delivered"


def test_replaying_an_event_of_a_program_without_an_endpoint_is_a_conflict(client, keys):
    event_id = _cancelled_event(client, keys)
    with transaction() as s:
        s.execute(text("UPDATE programs SET webhook_url = NULL WHERE code = 'mobile-bonus'"))
    assert_problem(
        client.post(f"/v1/webhooks/events/{event_id}/replay", headers=keys.header("support")),
        409,
        "webhook_not_configured",
    )


# --- event types beyond redemptions ----------------------------------------------------------------


def test_an_exchange_and_an_expiry_send_card_events(client, keys):
    from service.cards.service import expire_cards
    from tests.test_cards import exchange, issue_card

    import_codes_for("ARAY-CERT-1000", 1)
    card = issue_card(client, keys)
    assert exchange(client, keys, card).status_code == 201
    with transaction() as s:
        expire_cards(s, datetime.now(UTC) + timedelta(days=4000))
    with new_session() as s:
        events = {
            row.type: row.payload["data"]
            for row in s.execute(text("SELECT type, payload FROM webhook_events WHERE type LIKE 'card.%'"))
        }
    assert events["card.exchanged"]["amount"] == {"amount": "1000.00", "currency": "KZT"}
    assert events["card.exchanged"]["balance"] == {"amount": "4000.00", "currency": "KZT"}
    assert events["card.exchanged"]["redemption_id"] == card.redemption_id
    assert events["card.expired"]["unused_balance"] == {"amount": "4000.00", "currency": "KZT"}
    assert events["card.expired"]["card_last4"] == card.number[-4:]


def test_closing_a_period_sends_period_closed(demo_catalog):
    from service.ledger.periods import close_month

    close_month("mobile-bonus", date(2026, 1, 1), now=datetime(2026, 3, 1, tzinfo=UTC))
    with new_session() as s:
        (payload,) = s.execute(
            text("SELECT payload FROM webhook_events WHERE type = 'period.closed'")
        ).scalars()
    assert payload["data"]["program"] == "mobile-bonus" and payload["data"]["period"] == "2026-01"
    assert payload["data"]["act_number"].startswith("A-")


def test_low_stock_is_sent_once_per_crossing_to_every_program_offering_the_sku(keys):
    from service.balances.service import check_balances

    import_codes_for("ARAY-CINEMA-2000", 60)  # above the default threshold of 50: nothing to say
    with transaction() as s:  # every other product of the demo catalog is empty: already low
        s.execute(text("UPDATE products SET low_stock_threshold = 0 WHERE sku <> 'ARAY-CINEMA-2000'"))
        s.execute(text("UPDATE products SET low_stock_threshold = NULL WHERE sku = 'ARAY-CINEMA-2000'"))
    assert check_balances().stock_low == 0
    with transaction() as s:
        s.execute(text("UPDATE codes SET status = 'issued' WHERE id IN (SELECT id FROM codes LIMIT 20)"))
    first = check_balances()
    assert first.stock_low == 2  # mobile-bonus and home-internet both offer cinema-2000
    assert check_balances().stock_low == 0  # still low: no second event
    with new_session() as s:
        data = (
            s.execute(text("SELECT payload->'data' FROM webhook_events WHERE type = 'stock.low'"))
            .scalars()
            .all()
        )
    assert {d["available"] for d in data} == {40} and {d["threshold"] for d in data} == {50}
    import_codes_for("ARAY-CINEMA-2000", [f"MORE-{i}" for i in range(30)])  # back above 50
    assert check_balances().stock_low == 0
    with transaction() as s:
        s.execute(
            text(
                "UPDATE codes SET status = 'issued'"
                " WHERE id IN (SELECT id FROM codes WHERE status = 'available' LIMIT 30)"
            )
        )
    assert check_balances().stock_low == 2  # a new crossing


def test_low_budget_is_sent_once_when_the_month_crosses_the_threshold(client, keys):
    from service.balances.service import check_balances

    with transaction() as s:  # mobile-bonus: a budget of 5,000.00 and a threshold of 90 %
        s.execute(text("UPDATE programs SET monthly_budget_minor = 500000 WHERE code = 'mobile-bonus'"))
        s.execute(text("UPDATE products SET low_stock_threshold = 0"))
    from service.catalog.snapshot import invalidate_snapshot

    invalidate_snapshot()
    import_codes_for("ARAY-CINEMA-2000", 3)
    assert post_redemption(client, keys).status_code == 201  # 2,000.00: 40 %
    assert check_balances().budget_low == 0
    assert post_redemption(client, keys, msisdn="87011234568").status_code == 201  # 80 %
    assert check_balances().budget_low == 0
    card = post_redemption(client, keys, offer="gift-card-5000", points=5000, msisdn="87011234569")
    assert card.status_code == 409  # 5,000.00 more would exceed it
    with transaction() as s:
        s.execute(text("UPDATE program_budget_usage SET spent_minor = 460000"))  # 92 %
    assert check_balances().budget_low == 1
    assert check_balances().budget_low == 0
    with new_session() as s:
        data = s.execute(
            text("SELECT payload->'data' FROM webhook_events WHERE type = 'budget.low'")
        ).scalar_one()
    assert data["spent"] == {"amount": "4600.00", "currency": "KZT"}
    assert data["remaining"] == {"amount": "400.00", "currency": "KZT"} and data["threshold_percent"] == 90


# --- a program's balance ---------------------------------------------------------------------------


def test_a_program_shows_its_budget_spent_and_remaining_this_month(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 2)
    assert post_redemption(client, keys).status_code == 201
    response = client.get("/v1/programs/mobile-bonus", headers=keys.header("loyalty"))
    assert response.status_code == 200, response.text
    balance = response.json()["budget_this_month"]
    assert balance["budget"] == {"amount": "50000000.00", "currency": "KZT"}
    assert balance["spent"] == {"amount": "2000.00", "currency": "KZT"}
    assert balance["remaining"] == {"amount": "49998000.00", "currency": "KZT"}
    assert balance["month"] == datetime.now(UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Almaty")
    ).strftime("%Y-%m")


def test_a_program_without_a_budget_has_no_balance_and_another_programs_is_not_found(client, keys):
    response = client.get("/v1/programs/home-internet", headers=keys.header("support"))
    assert response.status_code == 200 and response.json()["budget_this_month"] is None
    assert response.json()["tariffs"]
    assert_problem(client.get("/v1/programs/business", headers=keys.header("loyalty")), 404, "not_found")
    assert_problem(client.get("/v1/programs/no-such", headers=keys.header("support")), 404, "not_found")
