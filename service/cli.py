"""`rewards`: the one command for operators and developers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.kit.config import get_settings
from service.kit.observability.logging import configure_logging

app = typer.Typer(help="Reward fulfillment service", no_args_is_help=True, pretty_exceptions_enable=False)
catalog_app = typer.Typer(help="The reward catalog", no_args_is_help=True)
codes_app = typer.Typer(help="Code pools", no_args_is_help=True)
keys_app = typer.Typer(help="API keys", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhooks", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(codes_app, name="codes")
app.add_typer(keys_app, name="keys")
from service.ledger.cli import register as _register_finance  # noqa: E402  (export, periods)

_register_finance(app)
from service.console.cli import register as _register_staff  # noqa: E402  (staff console accounts)

_register_staff(app)
app.add_typer(webhooks_app, name="webhooks")
cards_app = typer.Typer(help="Universal cards", no_args_is_help=True)
app.add_typer(cards_app, name="cards")
console = Console(stderr=True)


def _logging() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


@app.callback()
def main() -> None:
    # Every domain's models, mapped before a command opens its first session (a command's own imports
    # may not reach the tables its rows refer to). Here, not at the top: `rewards --help` stays fast.
    import service.models  # noqa: F401

    _logging()


def _migrate() -> None:
    from service.kit.db.migrate import upgrade

    upgrade(get_settings().database_url)


def _apply_catalog(path: Path) -> dict:
    from catalog.loader import load_catalog
    from service.catalog.service import apply_catalog
    from service.kit.db.engine import transaction

    loaded = load_catalog(path)
    with transaction() as session:
        return apply_catalog(session, loaded).as_dict()


def _import_demo_codes(folder: Path) -> None:
    from service.kit.db.engine import transaction
    from service.pools.service import body_sha256, import_codes, read_csv

    for csv_file in sorted(folder.glob("*.csv")):
        with transaction() as session, csv_file.open(encoding="utf-8", newline="") as fh:
            import_codes(
                session,
                csv_file.stem,
                read_csv(fh),
                source="demo",
                filename=csv_file.name,
                sha256=body_sha256(csv_file.read_bytes()),
            )


def first_start_setup() -> None:
    """Migrations always; the catalog (and demo codes) only when none was ever applied."""
    from catalog import DEMO_CATALOG
    from service.catalog.service import catalog_is_empty
    from service.kit.db.engine import new_session

    _migrate()
    with new_session() as session:
        empty = catalog_is_empty(session)
    if empty:
        path = get_settings().catalog_path or DEMO_CATALOG
        summary = _apply_catalog(path)
        console.print(f"catalog applied from {path}: created {summary['created']}")
        if path == DEMO_CATALOG:
            _import_demo_codes(DEMO_CATALOG / "codes")
            console.print("demo codes imported")


def _use_metrics_folder() -> None:
    """prometheus-client's multiprocess mode for this process and the worker processes it starts: one
    folder (PROMETHEUS_MULTIPROC_DIR, or a new temporary one), emptied, since a previous run's files
    would add stale values. Must happen before prometheus_client is imported in this process."""
    import tempfile

    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="rewards-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    os.environ["dramatiq_prom_db"] = str(folder)  # Dramatiq's middleware writes there too


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    processes: Annotated[int, typer.Option(help="Worker processes")] = 1,
    threads: Annotated[int, typer.Option(help="Threads per worker process")] = 8,
) -> None:
    """API and workers in one command (embedded PostgreSQL and Redis when no URLs are set)."""
    from service.kit.runtime import runtime

    with runtime(need_redis=True):
        first_start_setup()
        env = {**os.environ}
        children = {
            "api": subprocess.Popen(
                [sys.executable, "-m", "service.cli", "api", "--host", host, "--port", str(port)], env=env
            ),
            "worker": subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service.cli",
                    "worker",
                    "--processes",
                    str(processes),
                    "--threads",
                    str(threads),
                ],
                env=env,
            ),
        }
        stopping = False

        def stop(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        console.print(
            f"serving on http://{host}:{port} (Ctrl-C stops everything; data in {get_settings().data_dir})"
        )
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    console.print(f"{name} exited with {child.returncode}; stopping")
                    exit_code, stopping = 1, True
            time.sleep(0.2)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        console.print("stopped API and workers; stopping PostgreSQL and Redis")
    raise typer.Exit(exit_code)


@app.command()
def api(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[
        int | None, typer.Option(help="uvicorn worker processes (default API_WORKERS)")
    ] = None,
) -> None:
    """The HTTP API alone (uvicorn)."""
    import shutil
    import tempfile

    import uvicorn

    from service.kit.runtime import runtime

    workers = workers or get_settings().api_workers
    metrics_dir = None
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker process keeps its own counters; /metrics adds them up from this folder.
        metrics_dir = tempfile.mkdtemp(prefix="rewards-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        with runtime(need_redis=True):
            uvicorn.run(
                "service.asgi:app",
                host=host,
                port=port,
                workers=workers,
                log_config=None,
                access_log=False,  # the app logs every request itself, masked (service/app.py)
                proxy_headers=True,
                timeout_graceful_shutdown=20,
            )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@app.command()
def worker(
    processes: Annotated[int, typer.Option(help="Processes for reward SMS")] = 1,
    threads: Annotated[int, typer.Option(help="Threads per reward-SMS process")] = 8,
    webhook_threads: Annotated[int, typer.Option(help="Threads for webhooks and bulk SMS (one process)")] = 4,
    relay: Annotated[bool, typer.Option(help="Also publish the outbox from this process")] = True,
) -> None:
    """Dramatiq workers, and the outbox relay that feeds them.

    Reward SMS get processes of their own: a slow webhook receiver or a bulk campaign can never
    take the threads a waiting subscriber's code needs."""
    _use_metrics_folder()
    from service.kit.messaging.jobs import BULK_SMS_QUEUE, SMS_QUEUE, WEBHOOK_QUEUE
    from service.kit.observability.tracing import setup_tracing
    from service.kit.runtime import runtime
    from workers.exporter import start_exporter

    with runtime(need_redis=True):
        setup_tracing("rewards-worker")
        exporter = start_exporter()
        publisher = None
        if relay:
            from workers.broker import broker
            from workers.relay import Relay

            publisher = Relay(broker).start()
        groups = [(SMS_QUEUE,), (WEBHOOK_QUEUE, BULK_SMS_QUEUE)]
        sizes = [(processes, threads), (1, webhook_threads)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dramatiq",
                    "workers.actors",
                    "--processes",
                    str(p),
                    "--threads",
                    str(t),
                    "--queues",
                    *queues,
                ],
                env={**os.environ},
            )
            for queues, (p, t) in zip(groups, sizes, strict=True)
        ]

        def forward(signum: int, _frame: object) -> None:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.2)
        forward(signal.SIGTERM, None)  # one group ended: stop the other too, and exit with its code
        codes = [proc.wait() for proc in procs]
        if publisher:
            publisher.stop()
        if exporter:
            exporter.shutdown()
    raise typer.Exit(max(codes) if max(codes) > 0 else 0)


@app.command()
def relay() -> None:
    """The outbox relay alone (when workers run without it), with the metrics exporter."""
    _use_metrics_folder()
    from service.kit.observability.tracing import setup_tracing
    from service.kit.runtime import runtime
    from workers.exporter import start_exporter

    with runtime(need_redis=True):
        from workers.broker import broker
        from workers.relay import Relay

        setup_tracing("rewards-relay")
        start_exporter()
        publisher = Relay(broker).start()
        stopped = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stopped.set())
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        stopped.wait()
        publisher.stop()


@app.command()
def smsc(
    host: str = "127.0.0.1",
    port: int = 2775,
    receipt_delay: Annotated[float, typer.Option(help="Seconds from submit to the delivery receipt")] = 0.0,
    record: Annotated[str | None, typer.Option(help="Append a JSON line per received message here")] = None,
    control: Annotated[
        bool,
        typer.Option(
            help="Read fault commands from stdin (refuse-binds S, drop [S], drop-in-flight N, unbind,"
            " throttle S, refuse-part N STATUS, unknown-command, receipts ..., ids ...: docs/delivery.md)"
        ),
    ] = False,
    tls_cert: Annotated[str | None, typer.Option(help="Serve TLS with this certificate (PEM)")] = None,
    tls_key: Annotated[str | None, typer.Option(help="The certificate's private key (PEM)")] = None,
) -> None:
    """A test SMSC (SMPP 3.4 server) for local stacks; it delivers nothing to phones."""
    import ssl

    from service.delivery.smsc import run_forever

    context = None
    if tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_cert, tls_key)
    run_forever(host, port, receipt_delay, record, controlled=control, ssl_context=context)


@webhooks_app.command("secret")
def webhooks_secret(
    program: str,
    legacy_hex: Annotated[bool, typer.Option(help="The hex form the Rewards-Signature header uses")] = False,
) -> None:
    """Print a program's current webhook signing secret (`whsec_...`, as Standard Webhooks libraries
    take it), for its loyalty system to verify signatures."""
    from service.events.webhooks import format_secret, program_secret
    from service.kit.runtime import runtime

    with runtime():
        try:
            secret = program_secret(program)
        except LookupError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    typer.echo(secret.hex() if legacy_hex else format_secret(secret))


@webhooks_app.command("rotate-secret")
def webhooks_rotate_secret(
    program: str,
    overlap_hours: Annotated[
        float, typer.Option(min=0, help="Hours the old secret still signs, beside the new one")
    ] = 24.0,
) -> None:
    """Give a program a new webhook secret (printed once). For OVERLAP_HOURS every event is signed by
    the old and the new secret, so its loyalty system can switch at any moment in between."""
    from datetime import timedelta

    from service.events.webhooks import format_secret, rotate_secret
    from service.kit.runtime import runtime

    with runtime():
        try:
            secret = rotate_secret(program, overlap=timedelta(hours=overlap_hours))
        except LookupError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(f"new secret of {program}; the old one keeps signing for {overlap_hours:g} h:")
    typer.echo(format_secret(secret))


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic upgrade head)."""
    from service.kit.runtime import runtime

    with runtime():
        _migrate()
    console.print("database is at the latest migration")


@catalog_app.command("apply")
def catalog_apply(path: Path) -> None:
    """Validate a catalog file or folder, then apply it in one transaction (idempotent)."""
    from catalog.loader import CatalogError
    from service.kit.runtime import runtime

    try:
        from catalog.loader import load_catalog

        load_catalog(path)  # fail fast, before starting anything
    except CatalogError as exc:
        console.print(f"[red]catalog not applied[/red]: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(2) from None
    with runtime():
        _migrate()
        summary = _apply_catalog(path)
    typer.echo(json.dumps(summary, ensure_ascii=False))


@codes_app.command("import")
def codes_import(sku: str, file: Path) -> None:
    """Import codes from a CSV file (code[,pin][,expires_at]) at COPY speed, with progress."""
    import hashlib

    from service.kit.db.engine import transaction
    from service.kit.http.errors import Problem
    from service.kit.runtime import runtime
    from service.pools.service import import_codes, read_csv

    if not file.exists():
        console.print(f"[red]no such file[/red]: {file}")
        raise typer.Exit(2)
    digest = hashlib.sha256()
    read = 0

    def lines(fh):
        nonlocal read
        for line in fh:
            raw = line.encode()
            digest.update(raw)
            read += len(raw)
            yield line

    with (
        runtime(),
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[lines]:,} lines"),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
        ) as bar,
    ):
        task = bar.add_task(f"import {sku}", total=file.stat().st_size, lines=0)
        try:
            with transaction() as session, file.open(encoding="utf-8-sig", newline="") as fh:
                result = import_codes(
                    session,
                    sku,
                    read_csv(lines(fh)),
                    source="cli",
                    filename=file.name,
                    progress=lambda n: bar.update(task, completed=read, lines=n),
                )
                session.flush()
                from service.pools.models import CodeUpload

                upload = session.get(CodeUpload, result.upload_id)
                assert upload is not None  # written by the import above, in this transaction
                upload.sha256 = digest.hexdigest()
            bar.update(task, completed=file.stat().st_size, lines=result.lines)
        except Problem as exc:
            console.print(f"[red]{exc.code}[/red]: {exc.detail}")
            raise typer.Exit(2) from None
    out = {k: v for k, v in result.__dict__.items() if k not in ("rejected_lines", "duplicate_lines")}
    typer.echo(json.dumps(out))
    for rejected in result.rejected_lines[:20]:
        typer.echo(f"line {rejected['line']}: {rejected['reason']}", err=True)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="loyalty, partner, finance, support or admin")],
    name: Annotated[str, typer.Option(help="Who holds the key")],
    program: Annotated[list[str] | None, typer.Option(help="Program (loyalty keys; repeatable)")] = None,
    partner: Annotated[str | None, typer.Option(help="Partner code (partner keys)")] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Loyalty keys: redeem against sandbox rewards (no real stock, budget or finance records;"
            " SMS to the sandbox file; magic numbers fail on purpose, see docs/integration.md)",
        ),
    ] = False,
) -> None:
    """Create a key. It is printed once and stored hashed: copy it now."""
    from service.auth.service import create_key
    from service.kit.db.engine import transaction
    from service.kit.runtime import runtime

    with runtime():
        try:
            with transaction() as session:
                created = create_key(
                    session, role=role, name=name, programs=program, partner=partner, sandbox=sandbox
                )
                key_id = created.record.key_id
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(f"created {'sandbox ' if sandbox else ''}key {key_id} ({role}); it is shown only now:")
    typer.echo(created.key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (ids, roles, scopes; never the secrets)."""
    from service.auth.service import list_keys
    from service.kit.db.engine import new_session
    from service.kit.runtime import runtime

    with runtime(), new_session() as session:
        table = Table("key id", "name", "role", "scope", "created", "revoked")
        for k in list_keys(session):
            scope = ",".join(k.programs) if k.programs else (k.partner_code or "all")
            if k.sandbox:
                scope += " (sandbox)"
            table.add_row(
                k.key_id,
                k.name,
                k.role,
                scope,
                k.created_at.isoformat(timespec="seconds"),
                k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
            )
        Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id; it stops working at once."""
    from service.auth.service import revoke_key
    from service.kit.db.engine import transaction
    from service.kit.runtime import runtime

    with runtime():
        try:
            with transaction() as session:
                revoke_key(session, key_id)
        except LookupError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    console.print(f"revoked {key_id}")


@keys_app.command("rotate-encryption")
def keys_rotate_encryption(
    batch_size: Annotated[int, typer.Option(min=1, max=50_000, help="Rows per transaction")] = 1000,
    pause: Annotated[float, typer.Option(min=0, help="Seconds to sleep between batches")] = 0.0,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many rows (resume later)")] = None,
) -> None:
    """Re-encrypt codes, PINs, card numbers and webhook secrets under the current key (the first of
    ENCRYPTION_KEYS), in batches, with progress. Safe to interrupt: run it again to resume."""
    from service.kit.runtime import runtime
    from service.kit.security.crypto import get_keyring
    from service.kit.security.rotation import remaining, rotate

    with runtime():
        keyring = get_keyring()
        todo = remaining(keyring)
        console.print(f"current key {keyring.current}; rows to re-encrypt: {todo}")
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            tasks = {table: bar.add_task(table, total=count) for table, count in todo.items()}
            try:
                done = rotate(
                    batch_size=batch_size,
                    pause=pause,
                    limit=limit,
                    progress=lambda table, n: bar.advance(tasks[table], n),
                )
            except KeyboardInterrupt:
                bar.stop()
                console.print(f"interrupted; still to do: {remaining(keyring)}; run it again to resume")
                raise typer.Exit(130) from None
        left = remaining(keyring)
    typer.echo(json.dumps({"key_id": keyring.current, "rotated": done, "remaining": left}))
    if any(left.values()) and limit is None:
        console.print("[yellow]some rows were held by other transactions: run it again[/yellow]")
        raise typer.Exit(1)


@keys_app.command("encryption-status")
def keys_encryption_status() -> None:
    """Rows per table and encryption key id: an old key may leave ENCRYPTION_KEYS once no row uses it."""
    from service.kit.runtime import runtime
    from service.kit.security.crypto import get_keyring
    from service.kit.security.rotation import usage

    with runtime():
        keyring = get_keyring()
        counts = usage()
    table = Table("table", "key id", "rows", "configured")
    for name, by_key in counts.items():
        for key_id, rows in sorted(by_key.items(), key=lambda kv: str(kv[0])):
            configured = "current" if key_id == keyring.current else "yes" if key_id in keyring.ids else "NO"
            table.add_row(name, key_id or "(before key ids)", f"{rows:,}", configured)
    Console().print(table)
    typer.echo(
        json.dumps(
            {
                "current": keyring.current,
                "keys": list(keyring.ids),
                "rows": {name: {str(k): v for k, v in by_key.items()} for name, by_key in counts.items()},
            }
        )
    )


@cards_app.command("expire")
def cards_expire() -> None:
    """Expire active cards past their date and book their unused balances as breakage (idempotent;
    schedule it, e.g. hourly)."""
    from datetime import datetime

    from service.cards.service import expire_cards
    from service.kit.db.engine import transaction
    from service.kit.runtime import runtime

    expired = breakage = 0
    with runtime():
        while True:  # batches of 1,000 cards, each in its own transaction
            with transaction() as session:
                result = expire_cards(session, datetime.now(UTC))
            expired, breakage = expired + result.expired, breakage + result.breakage_minor
            if result.expired == 0:
                break
    typer.echo(json.dumps({"expired": expired, "breakage_minor": breakage}))


@app.command("openapi")
def openapi_cmd(output: Path = Path("openapi/openapi.json")) -> None:
    """Write the OpenAPI document generated from the code (committed in openapi/)."""
    from service.openapi import render

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render())
    console.print(f"wrote {output}")


if __name__ == "__main__":
    app()
