"""`rewards staff ...`: accounts made, listed, disabled and re-passworded from the command line, the
password read from standard input and stored only as an argon2 hash."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from service.cli import app
from service.console import accounts
from service.kit.db.engine import new_session, transaction
from tests.console.helpers import PASSWORD, sign_in

runner = CliRunner()


def _hash(email: str) -> str:
    with new_session() as s:
        return s.execute(
            text("SELECT password_hash FROM staff_accounts WHERE email = :e"), {"e": email}
        ).scalar()


def test_staff_create_reads_the_password_from_standard_input_and_stores_an_argon2_hash(client, demo_catalog):
    result = runner.invoke(
        app,
        ["staff", "create", "Agent@Operator.KZ", "--role", "support", "--program", "business"],
        input="a long enough password\n",
    )
    assert result.exit_code == 0, result.output
    stored = _hash("agent@operator.kz")
    assert stored.startswith("$argon2id$") and "a long enough password" not in stored
    assert sign_in(client, "agent@operator.kz", "a long enough password").status_code == 303


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--role", "cashier"], "role must be one of"),
        (["--role", "partner"], "needs --partner"),
        (["--role", "finance", "--program", "business"], "only support accounts"),
        (["--role", "support", "--partner", "aray-cinema"], "only partner accounts"),
        (["--role", "partner", "--partner", "nobody"], "unknown partner"),
        (["--role", "support", "--program", "nowhere"], "unknown program"),
    ],
)
def test_staff_create_refuses_a_wrong_role_or_scope(demo_catalog, args, why):
    result = runner.invoke(app, ["staff", "create", "x@operator.kz", *args], input=PASSWORD + "\n")
    assert result.exit_code == 2 and why in result.output
    with new_session() as s:
        assert s.execute(text("SELECT count(*) FROM staff_accounts")).scalar() == 0


def test_staff_create_refuses_a_short_password_and_a_second_account_for_an_email(demo_catalog):
    assert (
        "at least 10"
        in runner.invoke(app, ["staff", "create", "a@operator.kz", "--role", "admin"], input="short\n").output
    )
    assert (
        runner.invoke(
            app, ["staff", "create", "a@operator.kz", "--role", "admin"], input=PASSWORD + "\n"
        ).exit_code
        == 0
    )
    again = runner.invoke(app, ["staff", "create", "A@operator.kz", "--role", "admin"], input=PASSWORD + "\n")
    assert again.exit_code == 2 and "already has an account" in again.output


def test_staff_list_shows_roles_and_scopes_never_hashes(staff):
    result = runner.invoke(app, ["staff", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert (
        "cashier@aray.kz" in result.output and "aray-cinema" in result.output and "business" in result.output
    )
    assert "argon2" not in result.output


def test_staff_disable_stops_sign_in(client, staff):
    assert runner.invoke(app, ["staff", "disable", staff.finance]).exit_code == 0
    assert "login-error" in sign_in(client, staff.finance).text


def test_staff_password_sets_a_new_one_ends_sessions_and_lifts_a_lock(client, staff):
    for _ in range(5):
        sign_in(client, staff.finance, "wrong password!")
    result = runner.invoke(app, ["staff", "password", staff.finance], input="brand new password\n")
    assert result.exit_code == 0, result.output
    assert sign_in(client, staff.finance, "brand new password").status_code == 303
    assert "login-error" in sign_in(client, staff.finance).text  # the old one no longer works


def test_a_new_password_ends_the_accounts_sessions(staff):
    with transaction() as s:
        signed = accounts.sign_in(
            s, staff.support, PASSWORD, address=None, now=accounts.datetime.now(accounts.UTC)
        )
    with transaction() as s:
        accounts.set_password(s, staff.support, "another long password")
    with transaction() as s:
        assert (
            accounts.resume(
                s, signed.token, idle=accounts.timedelta(minutes=30), now=accounts.datetime.now(accounts.UTC)
            )
            is None
        )
