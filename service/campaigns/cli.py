"""`rewards campaigns`: a program's bulk opt-out list, from a file of phones or the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

campaigns_app = typer.Typer(help="Campaigns: the programs' bulk opt-out lists", no_args_is_help=True)
console = Console(stderr=True)
BATCH = 5_000


def _phones(phones: list[str] | None, file: Path | None) -> list[str]:
    from service.kit.values.phones import normalize_msisdn

    raw = list(phones or [])
    if file is not None:
        raw += [line.strip() for line in file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    good, bad = [], 0
    for number, text in enumerate(raw, start=1):
        try:
            good.append(normalize_msisdn(text))
        except ValueError as exc:
            bad += 1
            console.print(f"[yellow]line {number}: {exc}[/yellow]")
    if bad:
        console.print(f"[red]{bad} phones are not valid: nothing changed[/red]")
        raise typer.Exit(2)
    return good


def _apply(program: str, msisdns: list[str], *, add: bool) -> int:
    from service.campaigns import service
    from service.kit.db.engine import transaction

    changed = 0
    with typer.progressbar(length=len(msisdns), label="opt-outs", file=sys.stderr) as bar:
        for start in range(0, len(msisdns), BATCH):
            chunk = msisdns[start : start + BATCH]
            with transaction() as session:
                change = service.opt_out if add else service.opt_in
                changed += change(session, program, chunk)
            bar.update(len(chunk))
    return changed


@campaigns_app.command("opt-out")
def opt_out(
    program: str,
    phones: Annotated[list[str] | None, typer.Argument(help="Phones (any local form)")] = None,
    file: Annotated[Path | None, typer.Option(help="A file with one phone per line")] = None,
) -> None:
    """Subscribers who get no more bulk SMS from the program (their campaign rewards still come)."""
    from service.kit.runtime import runtime

    with runtime():
        msisdns = _phones(phones, file)
        changed = _apply(program, msisdns, add=True)
    already = len(msisdns) - changed
    console.print(f"{changed} phones added to {program}'s bulk opt-out list ({already} were on it)")


@campaigns_app.command("opt-in")
def opt_in(
    program: str,
    phones: Annotated[list[str] | None, typer.Argument(help="Phones (any local form)")] = None,
    file: Annotated[Path | None, typer.Option(help="A file with one phone per line")] = None,
) -> None:
    """Subscribers who take bulk SMS from the program again."""
    from service.kit.runtime import runtime

    with runtime():
        msisdns = _phones(phones, file)
        changed = _apply(program, msisdns, add=False)
    console.print(f"{changed} phones removed from {program}'s bulk opt-out list")


@campaigns_app.command("opted-out")
def opted_out(program: str) -> None:
    """The program's opt-out list, one phone per line (for the operator's own systems)."""
    from service.campaigns import service
    from service.kit.db.engine import new_session
    from service.kit.runtime import runtime

    with runtime(), new_session() as session:
        for msisdn in service.opted_out(session, program):
            typer.echo(msisdn)


def register(app: typer.Typer) -> None:
    app.add_typer(campaigns_app, name="campaigns")
