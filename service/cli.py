"""`rewards`: the one command for operators and developers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
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
from service.campaigns.cli import register as _register_campaigns  # noqa: E402  (bulk opt-outs)

_register_campaigns(app)
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


def _hold_data_folder(data: Path) -> object:
    """One `rewards serve` per data folder: a second one would start a second PostgreSQL on it."""
    import fcntl

    handle = (data / "serve.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        console.print(f"[red]another `rewards serve` runs on {data}[/red]")
        raise typer.Exit(2) from None
    return handle


def _answers(url: str, _proc: object) -> bool:
    import httpx

    return httpx.get(url, timeout=1).status_code == 200


# Stopped in this order: the API stops taking requests, the relay publishes no more, the workers finish
# what they hold, then Redis (which writes its AOF) and PostgreSQL (fast shutdown).
SERVE_STOP_ORDER = ("api", "relay", "worker", "redis", "postgres")


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    processes: Annotated[int, typer.Option(help="Reward-SMS worker processes")] = 2,
    threads: Annotated[int, typer.Option(help="Threads per worker process")] = 8,
) -> None:
    """API and workers in one command (embedded PostgreSQL and Redis when no URLs are set), each a
    supervised process: one that dies is started again while the others keep running."""
    from functools import partial

    from service.kit.embedded import EmbeddedPostgres, EmbeddedRedis, ensure_encryption_key
    from service.kit.runtime import _reset_caches
    from service.kit.supervisor import STATE_FILE_ENV, Component, GaveUp, RestartPolicy, Supervisor, popen

    settings = get_settings()
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    lock = _hold_data_folder(data)
    state_file = data / "serve-state.json"
    supervisor = Supervisor("serve", RestartPolicy.from_settings(), state_file=state_file)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    exit_code = 1
    try:
        if not settings.database_url:
            pg = EmbeddedPostgres(data / "pg")
            pg.prepare()
            # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
            supervisor.add(
                Component(
                    "postgres",
                    pg.spawn,
                    ready=pg.ready,
                    stop_signal=signal.SIGINT,
                    stop_timeout=60,
                    why=pg.why,
                )
            )
            supervisor.launch("postgres", wait=True)
            os.environ["DATABASE_URL"] = pg.uri
            if settings.encryption_key is None and settings.encryption_keys is None:
                os.environ["ENCRYPTION_KEY"] = ensure_encryption_key(data)
        elif settings.encryption_key is None and settings.encryption_keys is None:
            raise SystemExit(
                "ENCRYPTION_KEY is required when DATABASE_URL is set (base64 of 32 random bytes)"
            )
        if not settings.redis_url and not supervisor.stop_requested.is_set():
            rd = EmbeddedRedis(data / "redis")
            rd.prepare()
            supervisor.add(Component("redis", rd.spawn, ready=rd.ready, stop_timeout=20, why=rd.why))
            supervisor.launch("redis", wait=True)
            os.environ["REDIS_URL"] = rd.url
        if supervisor.stop_requested.is_set():
            exit_code = 0
            return
        _reset_caches()
        first_start_setup()
        _reset_caches()  # the setup's connections go: this process serves nothing from here on
        if supervisor.stop_requested.is_set():
            exit_code = 0
            return
        env = {**os.environ, STATE_FILE_ENV: str(state_file)}
        # The reward pages' links in SMS and in `reward_url` point at this server unless told otherwise.
        env.setdefault("PUBLIC_URL", f"http://{host}:{port}")
        py = [sys.executable, "-m", "service.cli"]
        metrics = settings.metrics_port
        supervisor.add(
            Component(
                "worker",
                partial(
                    popen,
                    [*py, "worker", "--no-relay", "--processes", str(processes), "--threads", str(threads)],
                    env={**env, "PROMETHEUS_MULTIPROC_DIR": str(data / "metrics" / "worker")},
                ),
                stop_timeout=60,
            )
        )
        supervisor.add(
            Component(
                "relay",
                partial(
                    popen,
                    [*py, "relay"],
                    # The relay's exporter (and its /readyz) next to the workers': METRICS_PORT + 1.
                    env={
                        **env,
                        "METRICS_PORT": str(metrics + 1 if metrics else 0),
                        "PROMETHEUS_MULTIPROC_DIR": str(data / "metrics" / "relay"),
                    },
                ),
                stop_timeout=20,
            )
        )
        probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        supervisor.add(
            Component(
                "api",
                partial(popen, [*py, "api", "--host", host, "--port", str(port)], env=env),
                ready=partial(_answers, f"http://{probe_host}:{port}/healthz"),
                stop_timeout=30,
            )
        )
        for name in ("worker", "relay", "api"):
            supervisor.launch(name)
        console.print(
            f"serving on http://{host}:{port} (Ctrl-C stops everything; data in {settings.data_dir})"
        )
        exit_code = supervisor.run()
    except GaveUp:
        exit_code = 1
    finally:
        present = [name for name in SERVE_STOP_ORDER if name in supervisor.components]
        supervisor.stop([n for n in present if n not in ("redis", "postgres")])
        console.print("stopped API and workers; stopping PostgreSQL and Redis")
        supervisor.stop([n for n in present if n in ("redis", "postgres")])
        lock.close()  # type: ignore[attr-defined]
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


def _dramatiq(queues: tuple[str, ...], threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dramatiq",
        "workers.actors",
        "--processes",
        "1",
        "--threads",
        str(threads),
    ] + [
        "--queues",
        *queues,
    ]


@app.command()
def worker(
    processes: Annotated[int, typer.Option(help="Processes for reward SMS")] = 1,
    threads: Annotated[int, typer.Option(help="Threads per reward-SMS process")] = 8,
    webhook_threads: Annotated[int, typer.Option(help="Threads for webhooks and bulk SMS (one process)")] = 4,
    relay: Annotated[bool, typer.Option(help="Also publish the outbox from this process")] = True,
) -> None:
    """Dramatiq workers, and the outbox relay that feeds them.

    Reward SMS get processes of their own: a slow webhook receiver or a bulk campaign can never
    take the threads a waiting subscriber's code needs. Each process is a Dramatiq command of its own,
    supervised here: one that dies is started again (its fetched messages go back to their queues at
    once) while the others keep consuming."""
    _use_metrics_folder()
    from functools import partial

    from service.kit import health
    from service.kit.messaging.jobs import BULK_SMS_QUEUE, CAMPAIGN_QUEUE, SMS_QUEUE, WEBHOOK_QUEUE
    from service.kit.observability.tracing import setup_tracing
    from service.kit.runtime import runtime
    from service.kit.supervisor import Component, RestartPolicy, Supervisor, popen
    from workers.exporter import Probes, start_exporter

    with runtime(need_redis=True):
        from workers.broker import requeue_fetched

        setup_tracing("rewards-worker")
        supervisor = Supervisor("worker", RestartPolicy.from_settings())
        board = health.worker_board()
        monitor = health.Monitor(board, partial(health.check_worker, board)).start()
        publisher = None
        if relay:
            from workers.broker import broker
            from workers.relay import Relay

            publisher = Relay(broker).start()

        def details() -> dict:
            found = dict(supervisor.snapshot()["components"])
            if publisher is not None:
                found["relay"] = publisher.view()
            return found

        exporter = start_exporter(probes=Probes(board, details))
        # A Dramatiq consumer that lost Redis tries again after 3 s by default; 0.5 s here.
        env = {"dramatiq_restart_delay": "500", **os.environ}
        groups: list[tuple[str, tuple[str, ...], int]] = [
            (f"sms-{i + 1}" if processes > 1 else "sms", (SMS_QUEUE,), threads) for i in range(processes)
        ]
        groups.append(("webhooks", (WEBHOOK_QUEUE, BULK_SMS_QUEUE, CAMPAIGN_QUEUE), webhook_threads))

        def requeue(proc: subprocess.Popen) -> None:
            requeue_fetched(proc.pid)

        for name, queues, group_threads in groups:
            supervisor.add(
                Component(
                    name,
                    partial(popen, _dramatiq(queues, group_threads), env=env),
                    stop_timeout=50,
                    on_exit=requeue,
                )
            )
        signal.signal(signal.SIGINT, supervisor.request_stop)
        signal.signal(signal.SIGTERM, supervisor.request_stop)
        for name, _, _ in groups:
            supervisor.launch(name)
        code = supervisor.run()
        supervisor.stop(together=True)
        if publisher:
            publisher.stop()
        monitor.stop()
        if exporter:
            exporter.shutdown()
    raise typer.Exit(code)


@app.command()
def relay() -> None:
    """The outbox relay alone (when workers run without it), with the metrics exporter."""
    _use_metrics_folder()
    from functools import partial

    from service.kit import health
    from service.kit.observability.tracing import setup_tracing
    from service.kit.runtime import runtime
    from workers.exporter import Probes, start_exporter

    with runtime(need_redis=True):
        from workers.broker import broker
        from workers.relay import Relay

        setup_tracing("rewards-relay")
        board = health.worker_board()
        monitor = health.Monitor(board, partial(health.check_worker, board)).start()
        publisher = Relay(broker).start()
        exporter = start_exporter(probes=Probes(board, lambda: {"relay": publisher.view()}))
        stopped = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stopped.set())
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        stopped.wait()
        publisher.stop()
        monitor.stop()
        if exporter:
            exporter.shutdown()


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
        typer.echo(f"line {rejected.line}: {rejected.reason}", err=True)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="loyalty, partner, finance, support, admin or approver")],
    name: Annotated[str, typer.Option(help="Who holds the key")],
    program: Annotated[
        list[str] | None,
        typer.Option(help="Program (loyalty keys, and support keys to scope them; repeatable)"),
    ] = None,
    partner: Annotated[str | None, typer.Option(help="Partner code (partner keys)")] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Loyalty keys: redeem against sandbox rewards (no real stock, budget or finance records;"
            " SMS to the sandbox file; magic numbers fail on purpose, see docs/integration.md)",
        ),
    ] = False,
    owner: Annotated[
        str | None,
        typer.Option(
            help="E-mail of the staff account of the person who holds the key (required for approver"
            " keys: maker-checker sees one person in the console and through the API)"
        ),
    ] = None,
) -> None:
    """Create a key. It is printed once and stored hashed: copy it now."""
    from service.auth.service import create_key
    from service.kit.db.engine import transaction
    from service.kit.runtime import runtime

    with runtime():
        try:
            with transaction() as session:
                created = create_key(
                    session,
                    role=role,
                    name=name,
                    programs=program,
                    partner=partner,
                    sandbox=sandbox,
                    owner=owner,
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
        table = Table("key id", "name", "role", "scope", "owner", "created", "revoked")
        for k, owner in list_keys(session):
            scope = ",".join(k.programs) if k.programs else (k.partner_code or "all")
            if k.sandbox:
                scope += " (sandbox)"
            table.add_row(
                k.key_id,
                k.name,
                k.role,
                scope,
                owner or "",
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
