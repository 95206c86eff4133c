"""POST /v1/redemptions and what follows: each behaviour of SPEC "Loyalty system", one per test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session, transaction
from tests.conftest import assert_problem, import_codes_for, post_redemption, redemption_body, table_counts


@pytest.fixture
def stocked(keys):
    import_codes_for("ARAY-CINEMA-2000", 5)
    return keys


def test_a_redemption_reserves_a_code_and_writes_record_and_outbox_in_one_go(client, stocked):
    response = post_redemption(client, stocked)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["msisdn"] == "+77011234567"
    assert body["reward"]["kind"] == "code" and len(body["reward"]["last4"]) == 4
    with new_session() as s:
        code = s.execute(
            text("SELECT c.status, c.last4 FROM codes c JOIN redemptions r ON r.code_id = c.id")
        ).one()
        record = s.execute(
            text(
                "SELECT type, face_value_minor, cost_minor, vat_rate_bp, vat_minor, code_last4,"
                " encode(code_fingerprint, 'hex') AS fp FROM reconciliation_records"
            )
        ).one()
        outbox = s.execute(text("SELECT queue, actor, payload FROM outbox")).one()
    assert code.status == "reserved" and code.last4 == body["reward"]["last4"]
    assert (record.type, record.face_value_minor, record.cost_minor) == ("issue", 200000, 180000)
    assert record.vat_rate_bp == 1600 and record.vat_minor == 27586  # 16 % inside 2 000.00 ₸
    assert record.code_last4 == code.last4 and len(record.fp) == 64
    assert outbox.queue == "sms_transactional" and outbox.payload == {"redemption_id": body["id"], "send": 0}


def test_the_response_never_contains_the_full_code(client, stocked):
    body = post_redemption(client, stocked).text
    assert "ARAY-CINEMA-2000-T" not in body


@pytest.mark.parametrize("local", ["87011234567", "7011234567", "+7 (701) 123-45-67", "+77011234567"])
def test_kazakh_local_number_forms_are_normalised_to_e164(client, stocked, local):
    assert post_redemption(client, stocked, msisdn=local).json()["msisdn"] == "+77011234567"


@pytest.mark.parametrize("bad", ["not a phone", "+7 701 123 45 67 ext 5", "7011234567#"])
def test_a_number_not_of_the_published_form_is_a_validation_error(client, stocked, bad):
    body = assert_problem(post_redemption(client, stocked, msisdn=bad), 422, "validation_error")
    assert body["errors"][0]["field"] == "body.msisdn"
    assert table_counts("redemptions")["redemptions"] == 0


@pytest.mark.parametrize("bad", ["12345", "87272501234", "0000000000000000000000000000000"])
def test_a_well_formed_number_that_is_not_mobile_is_invalid_msisdn(client, stocked, bad):
    # Of the published form (the schema allows it), refused by the numbering plan: its own code (issue 15).
    body = assert_problem(post_redemption(client, stocked, msisdn=bad), 422, "invalid_msisdn")
    assert body["errors"][0]["field"] == "body.msisdn"
    assert table_counts("redemptions")["redemptions"] == 0


def test_a_redemption_search_by_a_number_that_is_not_mobile_is_invalid_msisdn(client, stocked):
    response = client.get("/v1/redemptions?msisdn=00000000000", headers=stocked.header("support"))
    assert assert_problem(response, 422, "invalid_msisdn")["errors"][0]["field"] == "query.msisdn"


def test_a_subscriber_lookup_by_a_number_that_is_not_mobile_is_invalid_msisdn(client, stocked):
    response = client.get("/v1/subscribers/00000000000/redemptions", headers=stocked.header("support"))
    assert assert_problem(response, 422, "invalid_msisdn")["errors"][0]["field"] == "path.msisdn"


def test_a_card_offer_mints_a_luhn_valid_card_with_an_encrypted_pin(client, keys):
    from service.cards.numbers import luhn_valid
    from service.kit.security.crypto import get_vault

    response = post_redemption(client, keys, tariff="unlimited", offer="gift-card-5000", points=5000)
    assert response.status_code == 201, response.text
    reward = response.json()["reward"]
    assert reward["kind"] == "universal_card" and reward["nominal"] == {
        "amount": "6000.00",
        "currency": "KZT",
    }
    with new_session() as s:
        card = s.execute(text("SELECT * FROM cards")).one()
        record = s.execute(text("SELECT type, face_value_minor, vat_minor FROM reconciliation_records")).one()
    number = get_vault().decrypt(bytes(card.number_enc), b"card-number")
    pin = get_vault().decrypt(bytes(card.pin_enc), b"card-pin")
    assert luhn_valid(number) and number.endswith(reward["last4"]) and len(pin) == 6
    assert pin.encode() not in bytes(card.pin_enc) and number.encode() not in bytes(card.number_enc)
    assert card.balance_minor == card.nominal_minor == 600000 and card.status == "active"
    assert card.expires_at - card.created_at == timedelta(days=365)
    assert record == ("issue", 600000, 0)  # VAT on this card falls at redemption, per its product


def test_a_card_number_already_taken_is_drawn_again_within_the_same_redemption(client, keys, monkeypatch):
    from service.cards import service as cards
    from service.kit.security.crypto import get_vault

    first = post_redemption(client, keys, tariff="unlimited", offer="gift-card-5000", points=5000)
    assert first.status_code == 201, first.text
    with new_session() as s:
        taken = get_vault().decrypt(
            bytes(s.execute(text("SELECT number_enc FROM cards")).scalar_one()), b"card-number"
        )
    draws = iter([taken, taken, "9398000000000001"])
    monkeypatch.setattr(cards, "new_card_number", lambda: next(draws))
    second = post_redemption(client, keys, tariff="unlimited", offer="gift-card-5000", points=5000)
    assert second.status_code == 201, second.text
    assert second.json()["reward"]["last4"] == "0001"
    assert table_counts("cards", "redemptions", "reconciliation_records", "outbox") == {
        "cards": 2,
        "redemptions": 2,
        "reconciliation_records": 2,
        "outbox": 2,
    }


def test_card_numbers_follow_no_sequence(client, keys):
    numbers = []
    for _ in range(5):
        post_redemption(
            client,
            keys,
            tariff="basic",
            offer="gift-card-5000",
            points=5000,
            msisdn=f"8701{len(numbers):07d}",
        )
        numbers.append(None)
    from service.kit.security.crypto import get_vault

    with new_session() as s:
        found = [
            int(get_vault().decrypt(bytes(r.number_enc), b"card-number")[4:-1])
            for r in s.execute(text("SELECT number_enc FROM cards ORDER BY id"))
        ]
    gaps = {b - a for a, b in zip(found, found[1:], strict=False)}
    assert len(found) == 5 and len(gaps) == 4 and all(abs(g) > 1000 for g in gaps)


def test_earliest_expiring_code_goes_first_and_expired_ones_never(client, keys):
    soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    import_codes_for("ARAY-CINEMA-2000", ["LATE-0001"], expires_at="2031-01-01")
    import_codes_for("ARAY-CINEMA-2000", ["NEVER-001"])
    import_codes_for("ARAY-CINEMA-2000", ["SOON-0001"], expires_at=soon)
    with transaction() as s:  # a code that has expired while in the pool
        s.execute(
            text(
                "UPDATE codes SET expires_at = now() - interval '1 hour' WHERE last4 = '0001'"
                " AND expires_at < now() + interval '3 days'"
            )
        )
    import_codes_for("ARAY-CINEMA-2000", ["SOON-0002"], expires_at=soon)
    order = [
        post_redemption(client, keys, msisdn=f"870112345{i:02d}").json()["reward"]["last4"] for i in range(3)
    ]
    assert order == ["0002", "0001", "-001"]
    assert_problem(post_redemption(client, keys, msisdn="87011234599"), 409, "out_of_stock")


@pytest.mark.parametrize(
    "overrides,status,code",
    [
        ({"program": "no-such-program"}, 404, "unknown_program"),
        (
            {"program": "home-internet", "tariff": "home-100", "points": 2200},
            404,
            "unknown_program",
        ),  # not this key's
        ({"offer": "no-such-offer"}, 404, "unknown_offer"),
        (
            {"offer": "taxi-1500", "points": 1500},
            422,
            "tariff_not_eligible",
        ),  # basic may not take the taxi offer
        ({"tariff": "gold"}, 422, "tariff_not_eligible"),
        ({"points": 1999}, 422, "points_mismatch"),
        ({"points": 1600}, 422, "points_mismatch"),  # the unlimited tariff's price, asked on basic
    ],
)
def test_refusals_have_their_own_codes_and_write_nothing(client, stocked, overrides, status, code):
    assert_problem(post_redemption(client, stocked, **overrides), status, code)
    assert table_counts("redemptions", "reconciliation_records", "outbox") == {
        "redemptions": 0,
        "reconciliation_records": 0,
        "outbox": 0,
    }
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM codes WHERE status <> 'available'")).scalar_one() == 0


def test_an_offer_outside_its_window_is_inactive(stocked):
    from service.kit.http.errors import Problem
    from service.redemptions.schemas import RedemptionIn
    from service.redemptions.service import Scope, redeem

    request = RedemptionIn(**redemption_body(offer="taxi-1500", tariff="plus", points=1500))
    with pytest.raises(Problem) as refused, transaction() as s:
        redeem(s, request, scope=Scope(None), api_key_id=None, now=datetime(2025, 12, 31, tzinfo=UTC))
    assert refused.value.code == "offer_inactive"


def test_the_daily_limit_counts_in_the_programs_time_zone(client, stocked):
    assert post_redemption(client, stocked).status_code == 201
    assert post_redemption(client, stocked).status_code == 201
    assert_problem(post_redemption(client, stocked), 409, "limit_exceeded")
    assert post_redemption(client, stocked, msisdn="87017777777").status_code == 201  # another subscriber


def test_a_cancelled_redemption_does_not_count_towards_the_limit(client, stocked):
    first = post_redemption(client, stocked).json()
    post_redemption(client, stocked)
    client.post(f"/v1/redemptions/{first['id']}/cancel", headers=stocked.header("loyalty"))
    assert post_redemption(client, stocked).status_code == 201


def test_the_monthly_budget_is_never_overspent(client, stocked):
    with transaction() as s:
        s.execute(text("UPDATE programs SET monthly_budget_minor = 500000 WHERE code = 'mobile-bonus'"))
    from service.catalog.snapshot import invalidate_snapshot

    invalidate_snapshot()
    assert post_redemption(client, stocked, msisdn="87010000001").status_code == 201
    assert post_redemption(client, stocked, msisdn="87010000002").status_code == 201
    assert_problem(post_redemption(client, stocked, msisdn="87010000003"), 409, "budget_exceeded")
    with new_session() as s:
        assert s.execute(text("SELECT spent_minor FROM program_budget_usage")).scalar_one() == 400000
        assert s.execute(text("SELECT count(*) FROM codes WHERE status = 'reserved'")).scalar_one() == 2


def test_a_redemption_the_budget_refuses_leaves_nothing_behind_and_replays_its_refusal(client, stocked):
    with transaction() as s:
        s.execute(text("UPDATE programs SET monthly_budget_minor = 300000 WHERE code = 'mobile-bonus'"))
    from service.catalog.snapshot import invalidate_snapshot

    invalidate_snapshot()
    assert post_redemption(client, stocked, msisdn="87010000001").status_code == 201
    tables = ("redemptions", "reconciliation_records", "outbox", "cards")
    before = table_counts(*tables)
    body = redemption_body(msisdn="87010000002")
    headers = {**stocked.header("loyalty"), "Idempotency-Key": "over-budget"}
    assert_problem(client.post("/v1/redemptions", json=body, headers=headers), 409, "budget_exceeded")
    assert table_counts(*tables) == before
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM codes WHERE status = 'reserved'")).scalar_one() == 1
        assert s.execute(text("SELECT spent_minor FROM program_budget_usage")).scalar_one() == 200000
    replay = client.post("/v1/redemptions", json=body, headers=headers)
    assert_problem(replay, 409, "budget_exceeded")
    assert replay.headers["Idempotent-Replayed"] == "true"


def test_out_of_stock_when_the_pool_is_empty(client, keys):
    assert_problem(post_redemption(client, keys), 409, "out_of_stock")


def test_the_same_key_and_body_replays_the_first_response(client, stocked):
    body = redemption_body()
    headers = {**stocked.header("loyalty"), "Idempotency-Key": "replay-1"}
    first = client.post("/v1/redemptions", json=body, headers=headers)
    second = client.post("/v1/redemptions", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() and second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert table_counts("redemptions", "reconciliation_records", "outbox") == {
        "redemptions": 1,
        "reconciliation_records": 1,
        "outbox": 1,
    }


def test_a_refusal_is_replayed_too(client, keys):
    body = redemption_body()
    headers = {**keys.header("loyalty"), "Idempotency-Key": "refused-1"}
    first = client.post("/v1/redemptions", json=body, headers=headers)
    import_codes_for("ARAY-CINEMA-2000", 3)
    second = client.post("/v1/redemptions", json=body, headers=headers)
    assert first.status_code == second.status_code == 409 and second.json() == first.json()
    assert table_counts("redemptions")["redemptions"] == 0


def test_the_same_key_with_another_body_is_a_conflict(client, stocked):
    headers = {**stocked.header("loyalty"), "Idempotency-Key": "conflict-1"}
    client.post("/v1/redemptions", json=redemption_body(), headers=headers)
    assert_problem(
        client.post("/v1/redemptions", json=redemption_body(), headers=headers), 422, "idempotency_conflict"
    )
    assert table_counts("redemptions")["redemptions"] == 1


def test_keys_are_scoped_per_api_client(client, stocked):
    from service.auth.service import create_key

    with transaction() as s:
        other = create_key(s, role="loyalty", name="second system", programs=["mobile-bonus"]).key
    body = redemption_body()
    a = client.post(
        "/v1/redemptions", json=body, headers={**stocked.header("loyalty"), "Idempotency-Key": "shared"}
    )
    b = client.post(
        "/v1/redemptions",
        json={**body, "external_id": "other-ext"},
        headers={"Authorization": f"Bearer {other}", "Idempotency-Key": "shared"},
    )
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize("key", [b"caf\xe9-1", b"a\xa0b"])
def test_an_idempotency_key_beyond_visible_ascii_is_a_validation_error(client, stocked, key):
    # The published pattern is visible ASCII (issue 15: a no-break space passed the schema's length
    # rules and was refused by the server as not printable); the server refuses the same keys.
    headers = {**stocked.header("loyalty"), "Idempotency-Key": key}
    response = client.post("/v1/redemptions", json=redemption_body(), headers=headers)
    assert_problem(response, 422, "validation_error")
    assert table_counts("redemptions")["redemptions"] == 0


def test_a_missing_idempotency_key_is_400(client, stocked):
    response = client.post("/v1/redemptions", json=redemption_body(), headers=stocked.header("loyalty"))
    assert_problem(response, 400, "idempotency_key_missing")


def test_a_reused_external_id_is_refused(client, stocked):
    post_redemption(client, stocked, external_id="order-77")
    assert_problem(
        post_redemption(client, stocked, external_id="order-77", msisdn="87015555555"),
        409,
        "duplicate_external_id",
    )
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM codes WHERE status = 'reserved'")).scalar_one() == 1


def test_unknown_body_fields_are_rejected(client, stocked):
    assert_problem(post_redemption(client, stocked, discount=5), 422, "validation_error")


def test_read_one_and_find_by_filters(client, stocked):
    made = post_redemption(client, stocked, external_id="find-me").json()
    post_redemption(client, stocked, msisdn="87019999999")
    got = client.get(f"/v1/redemptions/{made['id']}", headers=stocked.header("loyalty"))
    assert got.status_code == 200 and got.json() == made
    found = client.get("/v1/redemptions?external_id=find-me", headers=stocked.header("loyalty")).json()[
        "items"
    ]
    assert [r["id"] for r in found] == [made["id"]]
    by_phone = client.get("/v1/redemptions?msisdn=87019999999", headers=stocked.header("loyalty")).json()[
        "items"
    ]
    assert len(by_phone) == 1 and by_phone[0]["msisdn"] == "+77019999999"
    accepted = client.get("/v1/redemptions?status=accepted", headers=stocked.header("loyalty")).json()[
        "items"
    ]
    assert len(accepted) == 2
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert (
        client.get(f"/v1/redemptions?created_from={future}", headers=stocked.header("loyalty")).json()[
            "items"
        ]
        == []
    )


def test_a_filter_given_twice_is_refused_not_silently_narrowed_to_one(client, stocked):
    post_redemption(client, stocked, external_id="twice")
    response = client.get(
        "/v1/redemptions?external_id=twice&external_id=other", headers=stocked.header("loyalty")
    )
    assert_problem(response, 422, "validation_error")
    assert response.json()["errors"][0]["field"] == "query.external_id"


def test_pagination_is_newest_first_and_complete(client, stocked):
    ids = [post_redemption(client, stocked, msisdn=f"8701000000{i}").json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/redemptions?limit=2" + (f"&cursor={cursor}" if cursor else ""),
            headers=stocked.header("support"),
        ).json()
        seen += [r["id"] for r in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == list(reversed(ids))


def test_another_programs_key_cannot_see_a_redemption(client, stocked):
    from service.auth.service import create_key

    made = post_redemption(client, stocked).json()
    with transaction() as s:
        home = create_key(s, role="loyalty", name="home", programs=["home-internet"]).key
    headers = {"Authorization": f"Bearer {home}"}
    assert_problem(client.get(f"/v1/redemptions/{made['id']}", headers=headers), 404, "not_found")
    assert_problem(client.post(f"/v1/redemptions/{made['id']}/cancel", headers=headers), 404, "not_found")
    assert client.get("/v1/redemptions", headers=headers).json()["items"] == []


def test_support_looks_up_a_subscriber_in_any_local_form(client, stocked):
    post_redemption(client, stocked, msisdn="87012223344")
    items = client.get("/v1/subscribers/87012223344/redemptions", headers=stocked.header("support")).json()[
        "items"
    ]
    assert len(items) == 1
    assert (
        client.get("/v1/subscribers/%2B77012223344/redemptions", headers=stocked.header("support")).json()[
            "items"
        ]
        == items
    )
    assert_problem(
        client.get("/v1/subscribers/123/redemptions", headers=stocked.header("support")),
        422,
        "validation_error",
    )
    assert_problem(
        client.get("/v1/subscribers/87012223344/redemptions", headers=stocked.header("loyalty")),
        403,
        "forbidden",
    )


def test_cancel_returns_a_never_sent_code_to_the_pool_with_a_reversing_record(client, stocked):
    made = post_redemption(client, stocked).json()
    response = client.post(f"/v1/redemptions/{made['id']}/cancel", headers=stocked.header("loyalty"))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM codes WHERE status = 'available'")).scalar_one() == 5
        records = s.execute(
            text("SELECT type, quantity, face_value_minor, vat_minor FROM reconciliation_records ORDER BY id")
        ).all()
        spent = s.execute(text("SELECT spent_minor FROM program_budget_usage")).scalar_one()
    assert [r.type for r in records] == ["issue", "cancel"]
    assert sum(r.quantity for r in records) == 0 and sum(r.face_value_minor for r in records) == 0
    assert sum(r.vat_minor for r in records) == 0 and spent == 0


def test_cancelling_twice_changes_nothing_more(client, stocked):
    made = post_redemption(client, stocked).json()
    client.post(f"/v1/redemptions/{made['id']}/cancel", headers=stocked.header("loyalty"))
    again = client.post(f"/v1/redemptions/{made['id']}/cancel", headers=stocked.header("loyalty"))
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert table_counts("reconciliation_records")["reconciliation_records"] == 2


def test_a_code_taken_by_the_sms_provider_is_not_cancellable(client, stocked):
    made = post_redemption(client, stocked).json()
    with transaction() as s:
        s.execute(text("UPDATE redemptions SET status = 'sent', first_sent_at = now()"))
    assert_problem(
        client.post(f"/v1/redemptions/{made['id']}/cancel", headers=stocked.header("loyalty")),
        409,
        "not_cancellable",
    )
    assert table_counts("reconciliation_records")["reconciliation_records"] == 1


def test_an_untouched_card_is_cancellable_even_after_its_sms_and_a_used_one_is_not(client, keys):
    card = post_redemption(client, keys, offer="gift-card-5000", points=5000).json()
    used = post_redemption(client, keys, offer="gift-card-5000", points=5000, msisdn="87015550000").json()
    with transaction() as s:
        s.execute(text("UPDATE redemptions SET status = 'delivered', first_sent_at = now()"))
        s.execute(
            text("UPDATE cards SET balance_minor = balance_minor - 100000 WHERE last4 = :l"),
            {"l": used["reward"]["last4"]},
        )
    ok = client.post(f"/v1/redemptions/{card['id']}/cancel", headers=keys.header("loyalty"))
    assert ok.status_code == 200 and ok.json()["status"] == "cancelled"
    assert_problem(
        client.post(f"/v1/redemptions/{used['id']}/cancel", headers=keys.header("loyalty")),
        409,
        "not_cancellable",
    )
    with new_session() as s:
        assert s.execute(
            text("SELECT status, balance_minor FROM cards WHERE last4 = :l"), {"l": card["reward"]["last4"]}
        ).one() == ("cancelled", 0)


def test_resend_queues_another_sms_up_to_the_limit(client, stocked):
    made = post_redemption(client, stocked).json()
    url = f"/v1/redemptions/{made['id']}/resend"
    for n in (1, 2, 3):
        response = client.post(url, headers=stocked.header("support"))
        assert response.status_code == 202 and response.json()["resend_count"] == n
    assert_problem(client.post(url, headers=stocked.header("support")), 409, "resend_limit_reached")
    with new_session() as s:
        sends = [r.payload["send"] for r in s.execute(text("SELECT payload FROM outbox ORDER BY id"))]
    assert sends == [0, 1, 2, 3]


def test_resend_with_an_idempotency_key_sends_once(client, stocked):
    made = post_redemption(client, stocked).json()
    headers = {**stocked.header("loyalty"), "Idempotency-Key": "resend-once"}
    first = client.post(f"/v1/redemptions/{made['id']}/resend", headers=headers)
    second = client.post(f"/v1/redemptions/{made['id']}/resend", headers=headers)
    assert first.json() == second.json() and second.headers["idempotent-replayed"] == "true"
    assert table_counts("outbox")["outbox"] == 2


def test_a_cancelled_redemption_is_not_resent(client, stocked):
    made = post_redemption(client, stocked).json()
    client.post(f"/v1/redemptions/{made['id']}/cancel", headers=stocked.header("loyalty"))
    assert_problem(
        client.post(f"/v1/redemptions/{made['id']}/resend", headers=stocked.header("loyalty")),
        409,
        "not_resendable",
    )
