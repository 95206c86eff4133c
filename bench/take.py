"""The take's cost after N takes since the last VACUUM of `codes` (issue 28, part 2).

The pool is filled with --pool codes (at least what both steps take, with room) of one product by
set-based SQL (the takes do not read the encrypted columns). Then:

1. autovacuum off for `codes`, VACUUM: the take's execution time and buffers (EXPLAIN (ANALYZE,
   BUFFERS) of the service's own TAKE_CODE statement, rolled back, median of --samples), then after
   each N of --takes codes taken since that VACUUM (in batches of 10,000, the same dead entries as as
   many single takes): the take of a connection that made those takes (it starts where its last take
   ended, sql/take_code.sql) and, beside it, the scan from the index's head that a connection pays on
   its first take and once a minute after;
2. VACUUM codes (what the fixed threshold of migration 0023 has autovacuum do every 20,000 takes),
   and the take again;
3. with --paced S: autovacuum on with the migration's settings, codes taken at --rate per second for
   S seconds, the take sampled every 5 s: its worst and median, and how often autovacuum ran.

    .venv/bin/python bench/take.py                                   # after 0/100k/250k takes
    .venv/bin/python bench/take.py --takes 0,250000,1000000 --paced 120

Embedded PostgreSQL under a temporary folder unless DATABASE_URL is set (a scratch database: its
codes are replaced). For step 3 on the embedded server the bench sets autovacuum_naptime to
--naptime (the production setting of docs/deploying.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._stack import available_codes_sql  # noqa: E402
from bench.redeem import SKU, Bench  # noqa: E402

CHUNK = 10_000


def take_statement(product: int) -> str:
    """The service's own TAKE_CODE for `product`, as of now(), taking the code as a redemption does."""
    from service.pools.service import TAKE_CODE

    return (
        TAKE_CODE.replace("%(code_status)s", "'reserved'")
        .replace("%(product)s", str(product))
        .replace("%(now)s", "now()")
    )


def _take_on_from(conn: Any, product: int | None, after: str) -> None:
    """The connection's last take of `product` ended at `after` (sql/take_code.sql's setting)."""
    conn.execute(
        "SELECT set_config('rewards.take_after_' || %(product)s,"
        " extract(epoch FROM now())::bigint || '/' || %(after)s, false)",
        {"product": product, "after": after},
    )
    conn.commit()


def _explain_take(conn: Any, statement: str) -> tuple[float, int]:
    """One EXPLAIN (ANALYZE, BUFFERS) of a take, rolled back: its time (ms) and buffers. A take that
    found no code is no measurement: the pool is dry, an error."""
    plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}").fetchone()[0][0]
    conn.rollback()
    if plan["Plan"].get("Actual Rows", 0) < 1:
        raise SystemExit("a take found no code: the pool is dry, no figure")
    node = plan["Plan"]
    return plan["Execution Time"], node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)


def sample_take(
    database_url: str, take: str, samples: int, *, product: int | None = None, after: str | None = None
) -> tuple[float, int]:
    """The take's execution time (ms) and buffers, medians of `samples` EXPLAIN (ANALYZE, BUFFERS) runs
    rolled back. `after` ("<expiry>/<id>", from take_codes): the connection's last take of `product`
    ended there, as in a connection that made those takes (sql/take_code.sql's rewards.take_after_);
    without it, a connection that has taken nothing yet, whose take scans from the index's head. A
    take that found no code is no measurement: the pool is dry, an error."""
    import psycopg

    times, buffers = [], []
    with psycopg.connect(database_url) as conn:
        if after is not None:
            _take_on_from(conn, product, after)
        for _ in range(samples):
            took_ms, took_buffers = _explain_take(conn, take)
            times.append(took_ms)
            buffers.append(took_buffers)
    return statistics.median(times), int(statistics.median(buffers))


def sample_take_beside(
    database_url: str,
    take: str,
    control: str,
    samples: int,
    *,
    product: int | None = None,
    after: str | None = None,
) -> tuple[float, float, int]:
    """`sample_take`, with a control take beside it: `samples` rounds in one connection, each one
    EXPLAIN (ANALYZE, BUFFERS) of `take` and one of `control` (a take of a product whose codes were never
    taken, so nothing dead lies in its path: what any take costs right after VACUUM), both rolled back.
    A take of 0.2 ms moves by a third with whatever else the machine does, the same minute for both
    statements: their ratio is the take's cost free of that drift. Returns the take's median time (ms),
    the median of the take/control ratios of the rounds and the take's median buffers."""
    import psycopg

    times, ratios, buffers = [], [], []

    with psycopg.connect(database_url) as conn:
        if after is not None:
            _take_on_from(conn, product, after)
        for i in range(samples):
            # alternate which goes first, so neither always runs on the other's warm caches
            if i % 2:
                control_ms, _ = _explain_take(conn, control)
                took_ms, took_buffers = _explain_take(conn, take)
            else:
                took_ms, took_buffers = _explain_take(conn, take)
                control_ms, _ = _explain_take(conn, control)
            times.append(took_ms)
            ratios.append(took_ms / control_ms)
            buffers.append(took_buffers)
    return statistics.median(times), statistics.median(ratios), int(statistics.median(buffers))


def take_codes(bench: Bench, product: int, n: int) -> str | None:
    """Takes `n` codes of `product` in batches of CHUNK (the same dead entries in ix_codes_allocation as
    as many single takes), earliest expiry first as the service takes them; fewer codes taken than
    asked is an error. Returns where the last take ended ("<expiry>/<id>"; None when n is 0)."""
    after = None
    for start in range(0, n, CHUNK):
        want = min(CHUNK, n - start)
        taken, after = bench.sql(
            "WITH t AS (UPDATE codes SET status = 'issued', status_changed_at = now() WHERE id IN ("
            f" SELECT id FROM codes WHERE product_id = {product} AND status = 'available'"
            " ORDER BY coalesce(expires_at, 'infinity'), id"
            f" LIMIT {want}) RETURNING coalesce(expires_at, 'infinity') AS expiry, id)"
            " SELECT count(*), (SELECT expiry || '/' || id FROM t ORDER BY expiry DESC, id DESC LIMIT 1)"
            " FROM t"
        )[0]
        if taken != want:
            raise SystemExit(f"took {taken} codes of {want}: the pool ran dry, no figure")
    return after


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=300_000)
    parser.add_argument("--takes", default="0,100000,250000", help="measure after these many takes")
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--paced", type=int, default=0, help="seconds of paced takes with autovacuum on")
    parser.add_argument("--rate", type=int, default=2000, help="takes per second in the paced run")
    parser.add_argument("--naptime", default="15s")
    args = parser.parse_args()
    marks = sorted(int(n) for n in args.takes.split(","))
    # every take of both steps finds a code, with room
    args.pool = max(args.pool, marks[-1] + args.rate * args.paced + 50_000)
    bench = Bench(argparse.Namespace())
    try:
        bench.rewards("migrate")
        bench.rewards("catalog", "apply", str(ROOT / "catalog" / "demo"))
        product, partner = bench.sql(f"SELECT id, partner_id FROM products WHERE sku = '{SKU}'")[0]
        bench.sql("TRUNCATE codes CASCADE")
        bench.sql(available_codes_sql(product, partner, args.pool, key_id=bench.key_id()))
        options = bench.sql("SELECT reloptions FROM pg_class WHERE relname = 'codes'")[0][0]
        print(f"codes: {args.pool:,} available; storage parameters {options}")
        take = take_statement(product)

        point: str | None = None

        def sample(after: str | None = None) -> tuple[float, int]:
            return sample_take(bench.env["DATABASE_URL"], take, args.samples, product=product, after=after)

        def take_n(n: int) -> None:
            nonlocal point
            point = take_codes(bench, product, n) or point

        bench.sql("ALTER TABLE codes SET (autovacuum_enabled = off)")
        bench.sql("VACUUM ANALYZE codes")
        taken = 0
        for mark in marks:
            take_n(mark - taken)
            taken = mark
            ms, buffers = sample(point)
            head_ms, head_buffers = sample()
            print(
                f"  autovacuum off, {mark:>9,} takes since VACUUM: take {ms:.3f} ms, {buffers:,} buffers"
                f" (a connection that made them); from the head {head_ms:.3f} ms, {head_buffers:,}"
                " buffers (a new connection, or once a minute)"
            )
        started = time.perf_counter()
        bench.sql("VACUUM codes")
        spent = time.perf_counter() - started
        ms, buffers = sample()
        print(f"  after VACUUM codes ({spent:.1f} s): take {ms:.3f} ms, {buffers:,} buffers")
        if args.paced:
            bench.sql("ALTER TABLE codes RESET (autovacuum_enabled)")
            bench.sql(f"ALTER SYSTEM SET autovacuum_naptime = '{args.naptime}'")
            bench.sql("SELECT pg_reload_conf()")
            before = bench.sql("SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'codes'")[0][
                0
            ]
            samples: list[float] = []
            step = max(1, args.rate // 10)
            deadline = time.monotonic() + args.paced
            next_sample = time.monotonic() + 5
            paced = 0
            while time.monotonic() < deadline:
                tick = time.monotonic()
                take_n(step)
                paced += step
                if tick >= next_sample:
                    samples.append(sample()[0])
                    next_sample = tick + 5
                time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
            after = bench.sql("SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'codes'")[0][
                0
            ]
            left = bench.sql("SELECT count(*) FROM codes WHERE status = 'available'")[0][0]
            if not left:
                raise SystemExit("the pool ran dry during the paced run: no figure")
            print(
                f"  autovacuum on (migration 0023, naptime {args.naptime}),"
                f" {paced:,} takes in {args.paced} s:"
                f" take median {statistics.median(samples):.3f} ms, worst {max(samples):.3f} ms"
                f" ({len(samples)} samples), autovacuum ran {after - before} times"
            )
    finally:
        bench.close()


if __name__ == "__main__":
    main()
