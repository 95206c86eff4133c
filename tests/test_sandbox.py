"""Sandbox keys: an integrator redeems with the same validation, limits and idempotency as for real,
but against sandbox rewards, with no trace in stock, budget or the finance records, SMS to the sandbox
file only, and magic numbers that fail on purpose (docs/integration.md, "Sandbox")."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from service.auth.service import create_key
from service.delivery import service as delivery
from service.delivery.providers import FileProvider
from service.kit.config import get_settings
from service.kit.db.engine import new_session, transaction
from service.kit.security.crypto import get_vault
from service.ledger.periods import close_month
from service.ledger.routes import period_body
from service.redemptions.schemas import RedemptionIn
from service.redemptions.service import Scope, cancel, redeem
from service.sandbox import service as sandbox
from tests.conftest import assert_problem, import_codes_for, post_redemption, redemption_body, table_counts
from tests.finance_helpers import almaty, redeem_at


@pytest.fixture
def keys(keys):
    """The usual keys, and a sandbox loyalty key for mobile-bonus (`keys.header("sandbox")`)."""
    with transaction() as s:
        keys.sandbox = create_key(
            s, role="loyalty", name="integration tests", programs=["mobile-bonus"], sandbox=True
        ).key
    return keys


def sandbox_redemption(client, keys, **overrides):
    return post_redemption(client, keys, role="sandbox", **overrides)


def card_redemption(**overrides) -> dict:
    return {"offer": "gift-card-5000", "points": 5000, **overrides}


def _deliver(redemption_id: str, *, provider=None, now: datetime | None = None):
    job = delivery.Job(uuid.UUID(redemption_id), 0)
    return delivery.deliver_many([job], provider=provider, now=now)[job]


def _sandbox_sms(redemption_id: str) -> list[dict]:
    path = get_settings().sms_sandbox_file or get_settings().data_dir / "sms-sandbox.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [m for m in map(json.loads, lines) if m["reference"].startswith(redemption_id)]


def _status(client, keys, redemption_id: str) -> str:
    return client.get(f"/v1/redemptions/{redemption_id}", headers=keys.header("sandbox")).json()["status"]


def _webhook_payloads(redemption_id: str) -> list[dict]:
    with new_session() as s:
        return list(
            s.scalars(
                text("SELECT payload FROM webhook_events WHERE redemption_id = :id ORDER BY created_at"),
                {"id": redemption_id},
            )
        )


def test_only_loyalty_keys_can_be_sandbox_keys(demo_catalog):
    for role, scope in (("admin", {}), ("finance", {}), ("partner", {"partner": "aray-cinema"})):
        with transaction() as s, pytest.raises(ValueError, match="only loyalty keys"):
            create_key(s, role=role, name="x", sandbox=True, **scope)


def test_rewards_keys_create_sandbox_prints_a_key_that_redeems_in_the_sandbox(client, keys):
    from typer.testing import CliRunner

    from service.cli import app

    try:
        result = CliRunner().invoke(
            app,
            ["keys", "create", "--role", "loyalty", "--program", "mobile-bonus", "--name", "t", "--sandbox"],
        )
    finally:  # the CLI points logging at the runner's stream, which closes
        from service.kit.observability.logging import configure_logging

        configure_logging("INFO", json=True)
    assert result.exit_code == 0, result.output
    keys.cli = result.stdout.strip().splitlines()[-1]
    response = post_redemption(client, keys, role="cli")
    assert response.status_code == 201, response.text
    assert response.json()["sandbox"] is True


def test_a_sandbox_code_reward_leaves_the_pool_untouched(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 2)
    response = sandbox_redemption(client, keys)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sandbox"] is True and body["status"] == "accepted"
    assert body["reward"]["last4"] == sandbox.sandbox_code(uuid.UUID(body["id"]))[-4:]
    with new_session() as s:
        statuses = s.execute(text("SELECT status, count(*) FROM codes GROUP BY status")).all()
        assert dict(statuses) == {"available": 2}
        assert s.execute(text("SELECT code_id FROM redemptions")).scalar_one() is None
    stock = client.get("/v1/stock", headers=keys.header("admin")).json()
    cinema = next(i for i in stock["items"] if i["sku"] == "ARAY-CINEMA-2000")
    assert (cinema["available"], cinema["reserved"], cinema["issued"]) == (2, 0, 0)


def test_a_sandbox_code_reward_is_given_even_when_the_real_pool_is_empty(client, keys):
    assert table_counts("codes") == {"codes": 0}
    assert sandbox_redemption(client, keys).status_code == 201
    assert_problem(post_redemption(client, keys), 409, "out_of_stock")


def test_the_real_response_says_sandbox_false(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 1)
    response = post_redemption(client, keys)
    assert response.status_code == 201 and response.json()["sandbox"] is False


def test_a_sandbox_card_is_minted_marked_and_unknown_to_partners(client, keys):
    response = sandbox_redemption(client, keys, **card_redemption())
    assert response.status_code == 201, response.text
    with new_session() as s:
        card = s.execute(
            text("SELECT c.* FROM cards c JOIN redemptions r ON r.card_id = c.id WHERE r.id = :id"),
            {"id": response.json()["id"]},
        ).one()
    assert card.sandbox is True and card.last4 == response.json()["reward"]["last4"]
    vault = get_vault()
    number = vault.decrypt(bytes(card.number_enc), b"card-number")
    pin = vault.decrypt(bytes(card.pin_enc), b"card-pin")
    verify = client.post(
        "/v1/cards/verify", json={"number": number, "pin": pin}, headers=keys.header("partner")
    )
    assert_problem(verify, 422, "wrong_card_or_pin")  # as an unknown number
    exchange = client.post(
        "/v1/cards/exchanges",
        json={"number": number, "pin": pin, "sku": "ARAY-CERT-1000"},
        headers={**keys.header("partner"), "Idempotency-Key": "sandbox-card"},
    )
    assert_problem(exchange, 422, "wrong_card_or_pin")


def test_sandbox_redemptions_write_no_reconciliation_record_and_take_no_budget(client, keys):
    assert sandbox_redemption(client, keys).status_code == 201
    assert sandbox_redemption(client, keys, **card_redemption()).status_code == 201
    assert table_counts("reconciliation_records", "program_budget_usage") == {
        "reconciliation_records": 0,
        "program_budget_usage": 0,
    }


def test_a_sandbox_redemption_runs_the_same_validation(client, keys):
    assert_problem(sandbox_redemption(client, keys, points=1999), 422, "points_mismatch")
    assert_problem(sandbox_redemption(client, keys, tariff="home-100"), 422, "tariff_not_eligible")
    assert_problem(sandbox_redemption(client, keys, msisdn="12345"), 422, "invalid_msisdn")
    assert_problem(sandbox_redemption(client, keys, program="business"), 404, "unknown_program")


def test_a_sandbox_redemption_counts_against_the_offers_limits_within_the_sandbox(client, keys):
    # taxi-1500: one per subscriber per day
    taxi = {"offer": "taxi-1500", "tariff": "plus", "points": 1500, "msisdn": "87015550001"}
    assert sandbox_redemption(client, keys, **taxi).status_code == 201
    assert_problem(sandbox_redemption(client, keys, **taxi), 409, "limit_exceeded")
    # the subscriber's real limit is untouched by the sandbox
    import_codes_for("TULPAR-RIDE-1500", 1)
    assert post_redemption(client, keys, **taxi).status_code == 201


def test_a_sandbox_redemption_is_idempotent(client, keys):
    first = sandbox_redemption(client, keys, key="same-key", external_id="order-1")
    again = sandbox_redemption(client, keys, key="same-key", external_id="order-1")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert_problem(
        sandbox_redemption(client, keys, key="same-key", external_id="order-2"), 422, "idempotency_conflict"
    )
    assert table_counts("redemptions") == {"redemptions": 1}


def test_a_sandbox_order_id_never_blocks_a_real_one(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 1)
    assert sandbox_redemption(client, keys, external_id="order-77").status_code == 201
    assert post_redemption(client, keys, external_id="order-77").status_code == 201
    assert_problem(sandbox_redemption(client, keys, external_id="order-77"), 409, "duplicate_external_id")


def test_sandbox_and_real_loyalty_keys_see_only_their_own_redemptions(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 1)
    real = post_redemption(client, keys).json()["id"]
    test = sandbox_redemption(client, keys).json()["id"]
    assert client.get(f"/v1/redemptions/{real}", headers=keys.header("sandbox")).status_code == 404
    assert client.get(f"/v1/redemptions/{test}", headers=keys.header("loyalty")).status_code == 404
    listed = {
        role: [r["id"] for r in client.get("/v1/redemptions", headers=keys.header(role)).json()["items"]]
        for role in ("sandbox", "loyalty", "support")
    }
    assert listed["sandbox"] == [test] and listed["loyalty"] == [real]
    assert sorted(listed["support"]) == sorted([real, test])  # staff see both, marked


def test_the_out_of_stock_magic_number_is_refused_as_out_of_stock(client, keys):
    response = sandbox_redemption(client, keys, msisdn=sandbox.OUT_OF_STOCK)
    assert_problem(response, 409, "out_of_stock")
    assert table_counts("redemptions") == {"redemptions": 0}


def test_a_magic_number_is_an_ordinary_number_for_a_real_key(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 1)
    assert post_redemption(client, keys, msisdn=sandbox.OUT_OF_STOCK).status_code == 201


def test_a_sandbox_sms_goes_to_the_sandbox_file_only_and_is_delivered(client, keys, tmp_path: Path):
    redemption_id = sandbox_redemption(client, keys, msisdn="+77015550002").json()["id"]
    configured = FileProvider(tmp_path / "operator-smsc.jsonl")  # stands for the real provider
    assert _deliver(redemption_id, provider=configured).result is delivery.SendResult.SENT
    assert not configured.path.exists() or configured.path.read_text() == ""
    [sms] = _sandbox_sms(redemption_id)
    assert sms["to"] == "+77015550002"
    assert sandbox.sandbox_code(uuid.UUID(redemption_id)) in sms["text"]
    assert _status(client, keys, redemption_id) == "delivered"


def test_sandbox_webhooks_say_sandbox_true(client, keys):
    redemption_id = sandbox_redemption(client, keys).json()["id"]
    _deliver(redemption_id)
    payloads = _webhook_payloads(redemption_id)
    assert [p["type"] for p in payloads] == ["redemption.sent", "redemption.delivered"]
    assert all(p["data"]["sandbox"] is True for p in payloads)


def test_real_webhooks_say_sandbox_false(client, keys, tmp_path: Path):
    import_codes_for("ARAY-CINEMA-2000", 1)
    redemption_id = post_redemption(client, keys).json()["id"]
    _deliver(redemption_id, provider=FileProvider(tmp_path / "sms.jsonl"))
    [sent] = _webhook_payloads(redemption_id)
    assert sent["type"] == "redemption.sent" and sent["data"]["sandbox"] is False


def test_the_sms_failed_magic_number_ends_failed_with_the_reason(client, keys):
    redemption_id = sandbox_redemption(client, keys, msisdn=sandbox.SMS_FAILED).json()["id"]
    assert _deliver(redemption_id).result is delivery.SendResult.FAILED
    body = client.get(f"/v1/redemptions/{redemption_id}", headers=keys.header("sandbox")).json()
    assert body["status"] == "failed" and "sandbox magic number" in body["status_reason"]
    assert _sandbox_sms(redemption_id) == []
    [failed] = _webhook_payloads(redemption_id)
    assert failed["type"] == "redemption.failed" and failed["data"]["sandbox"] is True


def test_the_delayed_receipt_magic_number_is_delivered_only_after_the_delay(client, keys):
    redemption_id = sandbox_redemption(client, keys, msisdn=sandbox.SMS_DELAYED_RECEIPT).json()["id"]
    _deliver(redemption_id)
    assert _status(client, keys, redemption_id) == "sent"
    delay = timedelta(seconds=get_settings().sandbox_receipt_delay_seconds)
    soon = datetime.now(UTC) + delay / 2
    assert delivery.settle_sandbox_receipts(now=soon) == 0
    assert _status(client, keys, redemption_id) == "sent"
    assert delivery.settle_sandbox_receipts(now=datetime.now(UTC) + delay) == 1
    assert _status(client, keys, redemption_id) == "delivered"


def test_housekeeping_delivers_the_delayed_receipts(client, keys):
    from workers.housekeeping import housekeeping

    redemption_id = sandbox_redemption(client, keys, msisdn=sandbox.SMS_DELAYED_RECEIPT).json()["id"]
    _deliver(redemption_id, now=datetime.now(UTC) - timedelta(hours=1))
    with transaction() as s:  # sent an hour ago: its receipt is due
        s.execute(text("UPDATE sms_messages SET sent_at = now() - interval '1 hour'"))
    assert housekeeping()["sandbox_receipts"] == 1
    assert _status(client, keys, redemption_id) == "delivered"


def test_cancelling_a_sandbox_redemption_writes_no_reversal(client, keys):
    code = sandbox_redemption(client, keys).json()["id"]
    card = sandbox_redemption(client, keys, **card_redemption()).json()["id"]
    for redemption_id in (code, card):
        response = client.post(f"/v1/redemptions/{redemption_id}/cancel", headers=keys.header("sandbox"))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
    assert table_counts("reconciliation_records") == {"reconciliation_records": 0}
    assert all(p["data"]["sandbox"] is True for r in (code, card) for p in _webhook_payloads(r))


def test_finance_exports_and_the_month_close_never_include_sandbox_activity(client, keys):
    """A month with a real redemption and the sandbox's every money-shaped event: code and card
    rewards, a cancel, and a card expired past its date. Only the real one is in the books."""
    from service.cards.service import expire_cards

    october = almaty(2026, 10, 10, 12)
    import_codes_for("ARAY-CINEMA-2000", 1)
    real = redeem_at(october)
    scope = Scope(frozenset({"mobile-bonus"}), sandbox=True)

    def sandbox_at(**overrides) -> uuid.UUID:
        request = RedemptionIn(**redemption_body(msisdn="87015550003", **overrides))
        with transaction() as s:
            return redeem(s, request, scope=scope, api_key_id=None, now=october).id

    sandbox_at()
    cancelled = sandbox_at()
    sandbox_at(**card_redemption())
    with transaction() as s:
        cancel(s, cancelled, scope=scope, now=october + timedelta(minutes=5))
        assert expire_cards(s, almaty(2026, 10, 30)).expired == 0  # not due yet
        s.execute(
            text("UPDATE cards SET expires_at = :at WHERE sandbox"), {"at": october + timedelta(days=1)}
        )
    with transaction() as s:
        assert expire_cards(s, almaty(2026, 10, 30)).expired == 1
    exported = client.get(
        "/v1/reconciliation/records?from=2026-10-01&to=2026-10-31&format=jsonl",
        headers=keys.header("finance"),
    )
    assert exported.status_code == 200, exported.text
    records = [json.loads(line) for line in exported.text.splitlines() if line.strip()]
    assert [(r["type"], r["redemption_id"]) for r in records] == [("issue", str(real))]
    view = period_body(
        close_month("mobile-bonus", datetime(2026, 10, 1, tzinfo=UTC).date(), now=almaty(2026, 11, 2))
    )
    assert view["totals"]["records"] == 1, view["totals"]


def test_sandbox_sms_outcomes_are_not_counted_in_the_sms_metrics(client, keys):
    """The SMS failure-ratio alert reads rewards_sms_outcomes_total: an integrator testing the
    failure magic number must not page anybody."""
    from prometheus_client import REGISTRY

    def outcomes() -> dict[str, float]:
        return {
            o: REGISTRY.get_sample_value("rewards_sms_outcomes_total", {"outcome": o}) or 0.0
            for o in ("sent", "delivered", "failed")
        }

    before = outcomes()
    for msisdn in ("87015550004", sandbox.SMS_FAILED):
        _deliver(sandbox_redemption(client, keys, msisdn=msisdn).json()["id"])
    assert outcomes() == before


# --- the two worlds' webhook events and figures (issue 29) -------------------------------------


def _both_worlds_delivered(client, keys, tmp_path: Path) -> tuple[str, str]:
    """A real and a sandbox redemption of mobile-bonus, each sent and delivered (webhook events)."""
    import_codes_for("ARAY-CINEMA-2000", 1)
    real = post_redemption(client, keys).json()["id"]
    _deliver(real, provider=FileProvider(tmp_path / "sms.jsonl"))
    test = sandbox_redemption(client, keys).json()["id"]
    _deliver(test)
    return real, test


def _listed(client, keys, role: str) -> list[dict]:
    response = client.get("/v1/webhooks/events", headers=keys.header(role))
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_a_sandbox_key_lists_only_sandbox_webhook_events(client, keys, tmp_path: Path):
    real, test = _both_worlds_delivered(client, keys, tmp_path)
    listed = _listed(client, keys, "sandbox")
    assert listed and {e["payload"]["data"]["redemption_id"] for e in listed} == {test}
    assert all(e["sandbox"] is True for e in listed)


def test_a_real_loyalty_key_lists_only_real_webhook_events(client, keys, tmp_path: Path):
    real, test = _both_worlds_delivered(client, keys, tmp_path)
    listed = _listed(client, keys, "loyalty")
    assert listed and {e["payload"]["data"]["redemption_id"] for e in listed} == {real}
    assert all(e["sandbox"] is False for e in listed)


def test_support_lists_the_events_of_both_worlds_marked(client, keys, tmp_path: Path):
    real, test = _both_worlds_delivered(client, keys, tmp_path)
    marks = {e["payload"]["data"]["redemption_id"]: e["sandbox"] for e in _listed(client, keys, "support")}
    assert marks == {real: False, test: True}


def _event_of(redemption_id: str) -> str:
    with new_session() as s:
        return str(
            s.scalars(
                text("SELECT id FROM webhook_events WHERE redemption_id = :id LIMIT 1"), {"id": redemption_id}
            ).one()
        )


def test_a_sandbox_key_cannot_replay_a_real_event(client, keys, tmp_path: Path):
    real, _ = _both_worlds_delivered(client, keys, tmp_path)
    event = _event_of(real)
    replay = client.post(f"/v1/webhooks/events/{event}/replay", headers=keys.header("sandbox"))
    assert_problem(replay, 404, "not_found")
    with new_session() as s:
        assert s.scalar(text("SELECT replays FROM webhook_events WHERE id = :id"), {"id": event}) == 0
        assert (
            s.scalar(text("SELECT count(*) FROM outbox WHERE payload->>'event_id' = :id"), {"id": event}) == 1
        )


def test_a_real_key_cannot_replay_a_sandbox_event(client, keys, tmp_path: Path):
    _, test = _both_worlds_delivered(client, keys, tmp_path)
    replay = client.post(f"/v1/webhooks/events/{_event_of(test)}/replay", headers=keys.header("loyalty"))
    assert_problem(replay, 404, "not_found")


def test_a_sandbox_key_replays_its_own_events(client, keys, tmp_path: Path):
    _, test = _both_worlds_delivered(client, keys, tmp_path)
    replay = client.post(f"/v1/webhooks/events/{_event_of(test)}/replay", headers=keys.header("sandbox"))
    assert replay.status_code == 202 and replay.json()["replays"] == 1


def test_a_sandbox_key_sees_the_sandbox_months_spend_not_the_real_one(client, keys, tmp_path: Path):
    import_codes_for("ARAY-CINEMA-2000", 2)
    for _ in range(2):
        assert post_redemption(client, keys).status_code == 201  # 2 x 2000 KZT for real
    assert sandbox_redemption(client, keys, **card_redemption()).status_code == 201  # 5000 in the sandbox
    real = client.get("/v1/programs/mobile-bonus", headers=keys.header("loyalty")).json()
    test = client.get("/v1/programs/mobile-bonus", headers=keys.header("sandbox")).json()
    assert real["budget_this_month"]["spent"]["amount"] == "4000.00"
    assert test["budget_this_month"]["spent"]["amount"] == "5000.00"
    assert test["budget_this_month"]["budget"] == real["budget_this_month"]["budget"]
    assert test["sandbox"] is True and real["sandbox"] is False
