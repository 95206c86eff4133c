"""Card PINs: an unknown number and a wrong PIN look the same (no card-existence oracle), and wrong
PINs throttle the client that makes them, not the card's holder (issue 29; docs/cards.md,
"Brute-force protection", has the numbers).

- Failures are counted per card number and per client (the partner; the address on public pages;
  the key for admin), with progressive delays after the client's free attempts.
- Across clients a global cap locks the card for everyone and raises an alert; one client alone never
  reaches it.
- A support action (audited) lifts any lock; the holder's own link never depends on it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from service.cards.service import new_card_number
from service.kit.db.engine import new_session, transaction
from tests.conftest import assert_problem
from tests.test_cards import IssuedCard, exchange, issue_card, verify

# The documented numbers (docs/cards.md, "Brute-force protection").
FREE = 5  # wrong PINs a client makes on a number before its delays start
CAP = 20  # failures across clients (each counting with its first FREE) that lock the card
FORGET_AFTER = timedelta(hours=24)  # a client's count is forgotten this long after its last failure
GLOBAL_LOCK = timedelta(hours=24)  # how long the cap locks the card for everyone


@pytest.fixture
def card(client, keys) -> IssuedCard:
    from tests.conftest import import_codes_for

    import_codes_for("ARAY-CERT-1000", 4)
    return issue_card(client, keys)


@pytest.fixture
def fixed_clock(monkeypatch):
    from datetime import UTC, datetime

    from service.cards import routes

    now = {"t": datetime.now(UTC)}
    monkeypatch.setattr(routes, "clock", lambda: now["t"])
    return now


def _comparable(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("instance", "request_id")}


def _unknown() -> IssuedCard:
    return IssuedCard(new_card_number(), "123456", "", 0)


# --- no card-existence oracle ---------------------------------------------------------------------


def test_an_unknown_number_and_a_wrong_pin_get_the_same_answer(client, keys, card):
    wrong = verify(client, keys, card, pin=card.wrong_pin)
    unknown = verify(client, keys, _unknown())
    assert (wrong.status_code, _comparable(wrong.json())) == (
        unknown.status_code,
        _comparable(unknown.json()),
    )
    body = assert_problem(unknown, 422, "wrong_card_or_pin")
    assert body["remaining_attempts"] == FREE - 1


def test_an_unknown_number_and_a_wrong_pin_get_the_same_answer_on_exchange(client, keys, card):
    wrong = exchange(client, keys, card, pin=card.wrong_pin)
    unknown = exchange(client, keys, _unknown())
    assert (wrong.status_code, _comparable(wrong.json())) == (
        unknown.status_code,
        _comparable(unknown.json()),
    )


def test_failures_on_an_unknown_number_are_counted_like_wrong_pins(client, keys, card):
    ghost = _unknown()
    answers = [verify(client, keys, ghost) for _ in range(FREE + 1)]
    real = [verify(client, keys, card, pin=card.wrong_pin) for _ in range(FREE + 1)]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [
        (r.status_code, r.json()["code"]) for r in real
    ]
    assert answers[-1].status_code == 423


def test_a_sandbox_card_is_answered_like_an_unknown_number(client, keys, card):
    from service.auth.service import create_key

    with transaction() as s:
        keys.sandbox = create_key(s, role="loyalty", name="sb", programs=["mobile-bonus"], sandbox=True).key
    test_card = issue_card(client, keys, role="sandbox")
    answer = verify(client, keys, test_card)
    assert (answer.status_code, _comparable(answer.json())) == (
        verify(client, keys, _unknown()).status_code,
        _comparable(verify(client, keys, _unknown()).json()),
    )


def test_an_unknown_number_costs_the_same_statements_and_pin_check_as_a_wrong_pin(
    client, keys, card, monkeypatch
):
    """What makes the time the same: the same SQL, in the same order, and one PIN decryption each."""
    import psycopg

    from service.kit.security.crypto import Vault

    work: list[str] = []
    execute, decrypt = psycopg.Cursor.execute, Vault.decrypt

    def recorded(cursor, query, *args, **kwargs):
        work.append(query if isinstance(query, str) else repr(query))
        return execute(cursor, query, *args, **kwargs)

    def counted(vault, blob, context, key_id=None):
        work.append(f"decrypt {context!r}")
        return decrypt(vault, blob, context, key_id)

    assert verify(client, keys, card).status_code == 200  # the key and the catalog are read once, before
    monkeypatch.setattr(psycopg.Cursor, "execute", recorded)
    monkeypatch.setattr(Vault, "decrypt", counted)
    verify(client, keys, card, pin=card.wrong_pin)
    for_wrong_pin, work[:] = list(work), []
    verify(client, keys, _unknown())
    assert work == for_wrong_pin and "decrypt b'card-pin'" in work


# --- per client, progressive ----------------------------------------------------------------------


def test_a_clients_free_attempts_then_a_delay_before_its_next_try(client, keys, card, fixed_clock):
    for remaining in range(FREE - 1, 0, -1):
        body = assert_problem(verify(client, keys, card, pin=card.wrong_pin), 422, "wrong_card_or_pin")
        assert body["remaining_attempts"] == remaining
    throttled = assert_problem(verify(client, keys, card, pin=card.wrong_pin), 423, "card_locked")
    assert throttled["lock"] == "client" and throttled["remaining_attempts"] == 0
    refused = verify(client, keys, card)  # even the right PIN waits: the delay is for this client
    assert_problem(refused, 423, "card_locked")
    assert int(refused.headers["Retry-After"]) == 60


def test_the_delays_grow_and_are_capped(client, keys, card, fixed_clock):
    delays = []
    for _ in range(FREE + 8):
        answer = verify(client, keys, card, pin=card.wrong_pin)
        if answer.status_code == 423:
            delays.append(int(answer.headers["Retry-After"]))
            fixed_clock["t"] += timedelta(seconds=delays[-1])
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_another_partner_verifies_the_card_while_one_is_throttled(client, keys, card):
    for _ in range(FREE + 1):
        verify(client, keys, card, pin=card.wrong_pin)
    assert_problem(verify(client, keys, card), 423, "card_locked")
    assert verify(client, keys, card, role="other_partner").status_code == 200
    assert exchange(client, keys, card, sku="KITAP-CERT-2500", role="other_partner").status_code != 423


def test_the_right_pin_clears_the_clients_count(client, keys, card):
    for _ in range(FREE - 1):
        verify(client, keys, card, pin=card.wrong_pin)
    assert verify(client, keys, card).status_code == 200
    body = assert_problem(verify(client, keys, card, pin=card.wrong_pin), 422, "wrong_card_or_pin")
    assert body["remaining_attempts"] == FREE - 1


def test_a_clients_count_is_forgotten_a_day_after_its_last_failure(client, keys, card, fixed_clock):
    for _ in range(FREE):
        verify(client, keys, card, pin=card.wrong_pin)
    fixed_clock["t"] += FORGET_AFTER + timedelta(seconds=1)
    body = assert_problem(verify(client, keys, card, pin=card.wrong_pin), 422, "wrong_card_or_pin")
    assert body["remaining_attempts"] == FREE - 1


def test_one_client_alone_never_locks_the_card_for_the_others(client, keys, card, fixed_clock):
    for _ in range(CAP * 2):
        answer = verify(client, keys, card, pin=card.wrong_pin)
        if answer.status_code == 423:
            fixed_clock["t"] += timedelta(seconds=int(answer.headers["Retry-After"]))
    assert verify(client, keys, card, role="other_partner").status_code == 200


# --- across clients: the global cap ----------------------------------------------------------------


def _fail_from_many_clients(card: IssuedCard, clients: int, now) -> None:
    """Wrong PINs from `clients` addresses (as the public /card page counts them), FREE each."""
    for i in range(clients):
        for _ in range(FREE):
            with transaction() as s:
                try:
                    lockout_authenticate(s, card.number, card.wrong_pin, f"198.51.100.{i + 1}", now)
                except Exception:  # noqa: BLE001 - the refusals are what is being counted
                    pass


def lockout_authenticate(session, number: str, pin: str, address: str, now):
    from service.cards.lockout import CardClient
    from service.cards.service import authenticate_card

    return authenticate_card(session, number, pin, now=now, client=CardClient.address(address))


def _locks_metric(client) -> float:
    metrics = client.get("/metrics").text
    line = next(m for m in metrics.splitlines() if m.startswith("rewards_card_locks_total"))
    return float(line.split()[-1])


def test_failures_from_many_clients_lock_the_card_for_everyone(client, keys, card, fixed_clock):
    before = _locks_metric(client)
    _fail_from_many_clients(card, CAP // FREE, fixed_clock["t"])
    locked = assert_problem(verify(client, keys, card), 423, "card_locked")  # a fresh client, right PIN
    assert locked["lock"] == "card"
    assert int(verify(client, keys, card).headers["Retry-After"]) > 23 * 3600
    assert _locks_metric(client) == before + 1  # the alert's metric
    with new_session() as s:
        events = s.execute(
            text("SELECT event, reason FROM card_events WHERE card_id = :id"), {"id": card.card_id}
        ).all()
    assert [e.event for e in events] == ["locked"]


def test_below_the_cap_the_card_stays_open_to_other_clients(client, keys, card, fixed_clock):
    _fail_from_many_clients(card, CAP // FREE - 1, fixed_clock["t"])
    assert verify(client, keys, card).status_code == 200


def test_the_global_lock_lifts_after_its_window(client, keys, card, fixed_clock):
    _fail_from_many_clients(card, CAP // FREE, fixed_clock["t"])
    fixed_clock["t"] += GLOBAL_LOCK + timedelta(seconds=1)
    assert verify(client, keys, card).status_code == 200


def test_a_lock_is_logged_as_a_warning_without_the_number(client, keys, card, fixed_clock):
    import io
    import json

    from service.kit.observability.logging import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    try:
        _fail_from_many_clients(card, CAP // FREE, fixed_clock["t"])
    finally:
        configure_logging("INFO", json=True)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (locked,) = [line for line in lines if line.get("event") == "card_locked"]
    assert locked["level"] == "warning" and locked["card_id"] == card.card_id
    assert card.number not in stream.getvalue() and card.wrong_pin not in stream.getvalue()


# --- support lifts any lock; the holder's link never depends on it ----------------------------------


def _unlock(client, keys, card, role: str = "support"):
    return client.post(
        f"/v1/cards/by-redemption/{card.redemption_id}/unlock",
        json={"reason": "the holder called, identity checked"},
        headers=keys.header(role),
    )


def test_support_lifts_the_global_lock_and_the_clients_delays(client, keys, card, fixed_clock):
    _fail_from_many_clients(card, CAP // FREE, fixed_clock["t"])
    for _ in range(FREE):
        verify(client, keys, card, pin=card.wrong_pin)
    response = _unlock(client, keys, card)
    assert response.status_code == 200, response.text
    assert response.json()["lock"] is None
    assert verify(client, keys, card).status_code == 200  # the partner's own delay is lifted too
    with transaction() as s:  # and the addresses' counts
        assert lockout_authenticate(s, card.number, card.pin, "198.51.100.1", fixed_clock["t"])


def test_an_unlock_is_audited_with_the_key_and_the_reason(client, keys, card, fixed_clock):
    _fail_from_many_clients(card, CAP // FREE, fixed_clock["t"])
    _unlock(client, keys, card)
    trail = client.get(f"/v1/cards/by-redemption/{card.redemption_id}", headers=keys.header("support")).json()
    (unlocked,) = [e for e in trail["events"] if e["event"] == "unlocked"]
    assert unlocked["reason"] == "the holder called, identity checked" and unlocked["key_id"]


def test_support_sees_the_lock_on_the_card(client, keys, card, fixed_clock):
    _fail_from_many_clients(card, CAP // FREE, fixed_clock["t"])
    shown = client.get(f"/v1/cards/by-redemption/{card.redemption_id}", headers=keys.header("support"))
    assert shown.json()["lock"]["locked_until"] and shown.json()["status"] == "active"


@pytest.mark.parametrize("role", ["partner", "loyalty", "finance"])
def test_only_support_and_admin_unlock(client, keys, card, role):
    assert_problem(_unlock(client, keys, card, role=role), 403, "forbidden")


def test_the_holders_own_link_reads_a_locked_card(client, keys, card, fixed_clock):
    """What /r/<token> uses: the card of the holder's redemption, with no PIN and no lock in the way."""
    from service.cards.service import card_for_exchange

    _fail_from_many_clients(card, CAP // FREE, fixed_clock["t"])
    assert_problem(verify(client, keys, card), 423, "card_locked")
    with transaction() as s:
        held = card_for_exchange(s, card.card_id)
    assert held.id == card.card_id and held.balance_minor == 500000


def test_a_public_address_is_counted_per_network_for_ipv6():
    from service.cards.lockout import CardClient

    assert CardClient.address("2001:db8:1:2:aaaa::1") == CardClient.address("2001:db8:1:2:bbbb::9")
    assert CardClient.address("2001:db8:1:3::1") != CardClient.address("2001:db8:1:2::1")
    assert CardClient.address("198.51.100.7") != CardClient.address("198.51.100.8")


def test_a_partners_wrong_pins_on_verify_and_exchange_add_up(client, keys, card):
    assert_problem(verify(client, keys, card, pin=card.wrong_pin), 422, "wrong_card_or_pin")
    body = assert_problem(exchange(client, keys, card, pin=card.wrong_pin), 422, "wrong_card_or_pin")
    assert body["remaining_attempts"] == FREE - 2
