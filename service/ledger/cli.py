"""`rewards export` and `rewards periods close|show|download`, registered on the main CLI app."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from service.kit.http.errors import Problem

console = Console(stderr=True)
periods_app = typer.Typer(help="Accounting periods: month close and closing documents", no_args_is_help=True)


def _fail(exc: Problem) -> NoReturn:
    console.print(f"[red]{exc.code}[/red]: {exc.detail}")
    raise typer.Exit(2)


def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write")],
    format: Annotated[str, typer.Option(help="csv, jsonl or xlsx")] = "csv",
    period: Annotated[str | None, typer.Option(help="Booked period YYYY-MM")] = None,
    date_from: Annotated[str | None, typer.Option("--from", help="First local date YYYY-MM-DD")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Last local date YYYY-MM-DD")] = None,
    program: Annotated[str | None, typer.Option(help="Program code")] = None,
    partner: Annotated[str | None, typer.Option(help="Partner code")] = None,
    sku: Annotated[str | None, typer.Option(help="Product sku")] = None,
    type: Annotated[list[str] | None, typer.Option("--type", help="Record type (repeatable)")] = None,
) -> None:
    """Export reconciliation records to a file (streamed, constant memory), with progress."""
    from service.kit.db.engine import get_engine, raw_connection
    from service.kit.http.errors import Problem
    from service.kit.runtime import runtime
    from service.ledger.exports import count_records, iter_export
    from service.ledger.routes import resolve_filter

    if format not in ("csv", "jsonl", "xlsx"):
        console.print("[red]validation_error[/red]: --format is csv, jsonl or xlsx")
        raise typer.Exit(2)
    bad_types = set(type or ()) - {"issue", "cancel", "exchange", "breakage"}
    if bad_types:
        console.print(f"[red]validation_error[/red]: unknown --type {', '.join(sorted(bad_types))}")
        raise typer.Exit(2)
    try:
        start = date.fromisoformat(date_from) if date_from else None
        end = date.fromisoformat(date_to) if date_to else None
    except ValueError:
        console.print("[red]validation_error[/red]: --from/--to are dates YYYY-MM-DD")
        raise typer.Exit(2) from None
    with runtime():
        try:
            flt = resolve_filter(
                period=period,
                date_from=start,
                date_to=end,
                program=program,
                partner=partner,
                sku=sku,
                types=type,
            )
        except Problem as exc:
            _fail(exc)
        with get_engine().connect() as connection:
            db = raw_connection(connection)
            db.rollback()
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            total = count_records(db, flt)
            with (
                Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(),
                    console=console,
                ) as bar,
                output.open("wb") as fh,
            ):
                task = bar.add_task(f"export {format}", total=total)
                for chunk in iter_export(db, flt, format, progress=lambda n: bar.advance(task, n)):
                    fh.write(chunk)
                bar.update(task, completed=total)
            connection.rollback()
    typer.echo(
        json.dumps(
            {"records": total, "format": format, "output": str(output), "bytes": output.stat().st_size}
        )
    )


@periods_app.command("close")
def periods_close(
    month: Annotated[str, typer.Argument(help="YYYY-MM")],
    program: Annotated[str, typer.Option(help="Program code")],
) -> None:
    """Close a month of a program: freeze totals, produce the act and the registry (idempotent)."""
    from service.kit.http.errors import Problem
    from service.kit.http.strict import parse_month
    from service.kit.runtime import runtime
    from service.ledger.periods import close_month
    from service.ledger.routes import period_body

    with runtime():
        try:
            with console.status(f"closing {program} {month}"):
                view = period_body(close_month(program, parse_month(month), closed_by="cli"))
        except Problem as exc:
            _fail(exc)
    _print_view(view)


@periods_app.command("show")
def periods_show(
    month: Annotated[str, typer.Argument(help="YYYY-MM")],
    program: Annotated[str, typer.Option(help="Program code")],
) -> None:
    """Status, totals and documents (with SHA-256) of a month."""
    from service.kit.http.errors import Problem
    from service.kit.http.strict import parse_month
    from service.kit.runtime import runtime
    from service.ledger.periods import read_period
    from service.ledger.routes import period_body

    with runtime():
        try:
            view = period_body(read_period(program, parse_month(month)))
        except Problem as exc:
            _fail(exc)
    _print_view(view)


@periods_app.command("download")
def periods_download(
    month: Annotated[str, typer.Argument(help="YYYY-MM")],
    program: Annotated[str, typer.Option(help="Program code")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder")] = Path("."),
) -> None:
    """Write the closing documents of a closed month into a folder, checking each SHA-256."""
    import hashlib

    from service.kit.http.errors import Problem
    from service.kit.http.strict import parse_month
    from service.kit.runtime import runtime
    from service.ledger.periods import KINDS, find_document, iter_document

    output.mkdir(parents=True, exist_ok=True)
    with runtime():
        try:
            for kind in KINDS:
                doc = find_document(program, parse_month(month), kind)
                digest = hashlib.sha256()
                with (output / doc.filename).open("wb") as fh:
                    for chunk in iter_document(doc.document_id):
                        digest.update(chunk)
                        fh.write(chunk)
                if digest.hexdigest() != doc.sha256:
                    console.print(f"[red]checksum mismatch[/red] for {doc.filename}")
                    raise typer.Exit(1)
                typer.echo(f"{doc.sha256}  {output / doc.filename}")
        except Problem as exc:
            _fail(exc)


def _print_view(view: dict) -> None:
    from service.ledger.periods import json_default

    typer.echo(json.dumps(view, ensure_ascii=False, default=json_default, indent=2))


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.add_typer(periods_app, name="periods")
