"""Console sign-in tells nobody which accounts exist, and wrong passwords throttle the place they come
from, not the account's owner (issue 29; docs/console.md, "Sign-in", has the numbers).

- One message, the same work and the same throttle for a known and an unknown e-mail.
- Per place (the address) and account: 5 wrong passwords, then delays from 1 minute doubling to 1 hour.
- Per place across accounts: 20, then the same delays (a place trying many accounts).
- Per account across places (each counting with its first 5): 10, then the same delays, but only for
  places the account has not signed in from: the right password from the usual place still works."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.console import accounts
from service.kit.db.engine import transaction
from tests.console.helpers import PASSWORD, sign_in
from tests.console.scenario import audit_rows

UNKNOWN = "nobody@operator.kz"
WRONG = "wrong password!"
OFFICE, ATTACKER, OTHER = "10.1.1.10", "203.0.113.7", "198.51.100.20"


def attempt(email: str, password: str, address: str | None, now: datetime) -> str:
    """One sign-in through the domain function, committed as the route commits it: 'ok' or the reason."""
    with transaction() as s:
        try:
            accounts.sign_in(s, email, password, address=address, now=now)
            return "ok"
        except accounts.SignInRefused as refused:
            return refused.reason if refused.reason != "disabled" else "wrong_password"


def held_until(email: str, address: str, now: datetime) -> datetime | None:
    with transaction() as s:
        try:
            accounts.sign_in(s, email, WRONG, address=address, now=now)
        except accounts.SignInRefused as refused:
            return refused.locked_until if refused.reason == "throttled" else None
    return None


def _error(response) -> str:
    start = response.text.index("login-error")
    return response.text[start : response.text.index("</", start)]


# --- no account oracle -----------------------------------------------------------------------------


def test_a_known_and_an_unknown_email_get_the_same_answers(client, staff):
    for _ in range(7):
        known, unknown = sign_in(client, staff.support, WRONG), sign_in(client, UNKNOWN, WRONG)
        assert (known.status_code, _error(known)) == (unknown.status_code, _error(unknown))


def test_a_known_and_an_unknown_email_are_throttled_alike(staff):
    now = datetime.now(UTC)
    known = [attempt(staff.support, WRONG, ATTACKER, now) for _ in range(7)]
    unknown = [attempt(UNKNOWN, WRONG, ATTACKER, now) for _ in range(7)]
    assert known == unknown == ["wrong_password"] * 5 + ["throttled"] * 2


def test_sign_in_does_the_same_work_for_a_known_and_an_unknown_email(staff, monkeypatch):
    """The same statements in the same order, and one argon2 verification each."""
    import psycopg

    work: list[str] = []
    execute = psycopg.Cursor.execute

    def recorded(cursor, query, *args, **kwargs):
        work.append(query if isinstance(query, str) else repr(query))
        return execute(cursor, query, *args, **kwargs)

    verify = accounts._verify

    def counted(password_hash: str, password: str) -> bool:
        work.append("argon2 verify")
        return verify(password_hash, password)

    now = datetime.now(UTC)
    attempt(staff.finance, WRONG, OFFICE, now)  # warm: the mappers' first statements
    monkeypatch.setattr(psycopg.Cursor, "execute", recorded)
    monkeypatch.setattr(accounts, "_verify", counted)
    attempt(staff.support, WRONG, ATTACKER, now)
    for_known, work[:] = list(work), []
    attempt(UNKNOWN, WRONG, ATTACKER, now)
    assert work == for_known and work.count("argon2 verify") == 1


def test_a_held_back_sign_in_does_the_same_work_for_a_known_and_an_unknown_email(staff, monkeypatch):
    """Held back, neither locks a row (a write that only a known account's try would do) nor verifies."""
    import psycopg

    now = datetime.now(UTC)
    for _ in range(6):
        attempt(staff.support, WRONG, ATTACKER, now)
        attempt(UNKNOWN, WRONG, ATTACKER, now)
    work: list[str] = []
    execute = psycopg.Cursor.execute

    def recorded(cursor, query, *args, **kwargs):
        work.append(query if isinstance(query, str) else repr(query))
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recorded)
    monkeypatch.setattr(accounts, "_verify", lambda *_: pytest.fail("a held-back try verified a password"))
    assert attempt(staff.support, WRONG, ATTACKER, now) == "throttled"
    for_known, work[:] = list(work), []
    assert attempt(UNKNOWN, WRONG, ATTACKER, now) == "throttled"
    assert work == for_known and not any("FOR UPDATE" in statement for statement in work)


def test_the_audit_log_still_tells_staff_what_happened(client, staff):
    sign_in(client, staff.support, WRONG)
    sign_in(client, UNKNOWN, WRONG)
    rows = [r for r in audit_rows() if r["action"] == "sign_in"]
    assert [r["email"] for r in rows] == [staff.support, UNKNOWN]
    assert [r["outcome"] for r in rows] == ["wrong_password", "wrong_password"]


# --- throttles that hold the attacker back, not the owner -----------------------------------------------


def test_the_right_password_from_the_usual_place_works_while_an_attacker_tries(staff):
    now = datetime.now(UTC)
    assert attempt(staff.support, PASSWORD, OFFICE, now) == "ok"  # the office is a usual place now
    for i in range(61):  # an attacker, from many places, every 5 minutes for 5 hours
        attempt(staff.support, WRONG, f"203.0.113.{i % 12}", now + timedelta(minutes=5 * i))
    assert attempt(staff.support, PASSWORD, OFFICE, now + timedelta(minutes=300, seconds=1)) == "ok"


def test_after_attacks_from_several_places_a_new_place_waits_even_with_the_right_password(staff):
    now = datetime.now(UTC)
    for address in (ATTACKER, OTHER):
        for _ in range(5):
            attempt(staff.support, WRONG, address, now)
    assert attempt(staff.support, PASSWORD, "192.0.2.99", now) == "throttled"


def test_one_place_alone_never_holds_the_account_back_for_others(staff):
    now = datetime.now(UTC)
    for i in range(40):  # one try an hour, then a burst
        attempt(staff.support, WRONG, ATTACKER, now + timedelta(hours=i))
    end = now + timedelta(hours=40)
    for _ in range(10):
        attempt(staff.support, WRONG, ATTACKER, end)
    assert attempt(staff.support, PASSWORD, "192.0.2.99", end) == "ok"


def test_a_places_delays_grow_and_are_capped(staff):
    now = datetime.now(UTC)
    delays: list[int] = []
    for _ in range(40):  # a wrong password whenever it is heard; the wait it is then told
        until = held_until(staff.support, ATTACKER, now)
        if until is not None:
            delays.append(round((until - now).total_seconds()))
            now = until
        if len(delays) == 9:
            break
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_a_place_trying_many_accounts_is_throttled(staff):
    now = datetime.now(UTC)
    outcomes = [attempt(f"guess{i}@operator.kz", WRONG, ATTACKER, now) for i in range(21)]
    assert outcomes == ["wrong_password"] * 20 + ["throttled"]
    assert attempt(staff.support, PASSWORD, ATTACKER, now) == "throttled"
    assert attempt(staff.support, PASSWORD, OFFICE, now) == "ok"


def test_the_right_password_clears_the_places_count(staff):
    now = datetime.now(UTC)
    for _ in range(4):
        attempt(staff.support, WRONG, OFFICE, now)
    assert attempt(staff.support, PASSWORD, OFFICE, now) == "ok"
    assert [attempt(staff.support, WRONG, OFFICE, now) for _ in range(5)] == ["wrong_password"] * 5


def test_a_new_password_lifts_every_throttle_of_the_account(staff):
    now = datetime.now(UTC)
    for address in (ATTACKER, OTHER, OFFICE):
        for _ in range(6):
            attempt(staff.support, WRONG, address, now)
    with transaction() as s:
        accounts.set_password(s, staff.support, "another long password")
    assert attempt(staff.support, "another long password", OFFICE, now) == "ok"
    assert attempt(staff.support, "another long password", "192.0.2.99", now) == "ok"


def test_the_page_says_when_to_try_again(client, staff):
    for _ in range(5):
        sign_in(client, staff.support, WRONG)
    page = sign_in(client, staff.support, PASSWORD)
    assert "rewards_console=" not in page.headers.get("set-cookie", "")
    from service.console import i18n

    assert i18n.MESSAGES["login.throttled"][0].split("{until}")[0] in _error(page)


@pytest.mark.parametrize("address", ["2001:db8:1:2::1", "2001:db8:1:2:ffff::2"])
def test_an_ipv6_place_is_its_64(staff, address):
    now = datetime.now(UTC)
    for _ in range(5):
        attempt(staff.support, WRONG, "2001:db8:1:2::9", now)
    assert attempt(staff.support, PASSWORD, address, now) == "throttled"


def test_rewards_staff_unlock_clears_the_accounts_counts(staff):
    from typer.testing import CliRunner

    from service.cli import app
    from service.kit.observability.logging import configure_logging

    now = datetime.now(UTC)
    for address in (ATTACKER, OTHER):
        for _ in range(6):
            attempt(staff.support, WRONG, address, now)
    try:
        result = CliRunner().invoke(app, ["staff", "unlock", staff.support])
    finally:  # the CLI points logging at the runner's stream, which closes
        configure_logging("INFO", json=True)
    assert result.exit_code == 0, result.output
    assert attempt(staff.support, PASSWORD, ATTACKER, now) == "ok"
    assert attempt(staff.support, PASSWORD, "192.0.2.99", now) == "ok"
