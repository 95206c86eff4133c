"""`rewards staff ...`: console accounts. Passwords come from standard input (asked twice on a
terminal), never from the command line, where they would stay in the shell's history."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

staff_app = typer.Typer(help="Staff console accounts", no_args_is_help=True)
console = Console(stderr=True)


def _read_password() -> str:
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            console.print("[red]the passwords differ[/red]")
            raise typer.Exit(2)
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@staff_app.command("create")
def staff_create(
    email: str,
    role: Annotated[
        str, typer.Option(help="support, finance, partner, admin or approver (approves campaigns)")
    ],
    program: Annotated[
        list[str] | None, typer.Option(help="Program a support account sees (repeatable; default: all)")
    ] = None,
    partner: Annotated[str | None, typer.Option(help="Partner code (partner cashiers)")] = None,
) -> None:
    """Create an account; the password is read from standard input."""
    from service.console.accounts import StaffError, create_account
    from service.kit.db.engine import transaction
    from service.kit.runtime import runtime

    password = _read_password()
    with runtime():
        try:
            with transaction() as session:
                account = create_account(
                    session, email=email, password=password, role=role, programs=program, partner=partner
                )
                created = account.email
        except StaffError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(f"created {created} ({role}); sign in at /console/login")


@staff_app.command("list")
def staff_list() -> None:
    """List accounts (never passwords)."""
    from datetime import UTC, datetime

    from service.console.accounts import list_accounts, throttled_until
    from service.kit.db.engine import new_session
    from service.kit.runtime import runtime

    with runtime(), new_session() as session:
        table = Table(
            "email", "role", "scope", "created", "last sign-in", "new places wait until", "disabled"
        )
        for a in list_accounts(session):
            scope = ",".join(a.programs) if a.programs else (a.partner_code or "all")
            held = throttled_until(session, a.email, datetime.now(UTC))
            table.add_row(
                a.email,
                a.role,
                scope,
                a.created_at.isoformat(timespec="seconds"),
                a.last_login_at.isoformat(timespec="seconds") if a.last_login_at else "",
                held.isoformat(timespec="seconds") if held else "",
                a.disabled_at.isoformat(timespec="seconds") if a.disabled_at else "",
            )
        Console().print(table)


@staff_app.command("disable")
def staff_disable(email: str) -> None:
    """Disable an account at once: its sessions end and it cannot sign in."""
    from service.console.accounts import StaffError, disable_account
    from service.kit.db.engine import transaction
    from service.kit.runtime import runtime

    with runtime():
        try:
            with transaction() as session:
                disable_account(session, email)
        except StaffError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(f"disabled {email}")


@staff_app.command("password")
def staff_password(email: str) -> None:
    """Set a new password (from standard input); the account's sessions end and a lockout is lifted."""
    from service.console.accounts import StaffError, set_password
    from service.kit.db.engine import transaction
    from service.kit.runtime import runtime

    password = _read_password()
    with runtime():
        try:
            with transaction() as session:
                set_password(session, email, password)
        except StaffError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(f"new password set for {email}")


@staff_app.command("unlock")
def staff_unlock(email: str) -> None:
    """Forget the wrong passwords counted for an account, from every place (after checking who asks)."""
    from service.console.accounts import lift_throttle
    from service.kit.db.engine import transaction
    from service.kit.runtime import runtime

    with runtime(), transaction() as session:
        cleared = lift_throttle(session, email)
    console.print(f"cleared {cleared} count(s) of wrong passwords for {email.strip().lower()}")


def register(app: typer.Typer) -> None:
    app.add_typer(staff_app, name="staff")
