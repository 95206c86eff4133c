"""WAL bytes per redemption with the outbox's message_id random (gen_random_uuid(), the code before
issue 28) and time-ordered (uuid7(), migration 0021), in a large outbox.

For each variant: the outbox is refilled with --rows published rows whose message ids are of that
variant (a grown production table), a CHECKPOINT is taken, and pgbench runs --redemptions
redemptions (bench/ceiling.py's script: the service's own statements, checked, so every one is a
whole redemption) with --clients clients; the WAL written is the pg_current_wal_lsn() delta, and
pg_stat_wal's full-page images are shown beside it. The two variants' scripts differ only in the
function that makes the outbox's message id. Rounds alternate the variants.

    .venv/bin/python bench/wal.py                       # 1,000,000 outbox rows, 20,000 redemptions
    .venv/bin/python bench/wal.py --rows 2000000 --redemptions 50000 --rounds 2

Embedded PostgreSQL under a temporary folder unless DATABASE_URL is set (then that database is
migrated and its outbox emptied: use a scratch database).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ceiling import pool_size, run_pgbench  # noqa: E402
from bench.redeem import Bench, ceiling_script  # noqa: E402

VARIANTS = {"random (gen_random_uuid)": "gen_random_uuid()", "time-ordered (uuid7)": "uuid7()"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000, help="published outbox rows before each run")
    parser.add_argument("--redemptions", type=int, default=20_000, help="redemptions per run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--offer", default="budgeted")
    args = parser.parse_args()
    per_client = max(1, args.redemptions // args.clients)
    total = per_client * args.clients
    bench = Bench(argparse.Namespace())
    try:
        bench.prepare(total * len(VARIANTS) * args.rounds + pool_size(1, 1))
        script = ceiling_script(bench, args.offer)
        base = script.read_text()
        if base.count("uuid7()") != 1:
            raise SystemExit("the redemption's script no longer makes exactly one uuid7() message id")
        url = bench.env["DATABASE_URL"]
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, function in VARIANTS.items():
                variant = script.with_name(f"redemption-{function[:4]}.sql")
                variant.write_text(base.replace("uuid7()", function))
                bench.sql("TRUNCATE outbox")
                bench.sql(
                    "INSERT INTO outbox (message_id, queue, actor, payload, created_at, published_at)"
                    f" SELECT {function}, 'sms_transactional', 'deliver_reward_sms', '{{}}',"
                    " now() - interval '1 day', now() - interval '1 day'"
                    f" FROM generate_series(1, {args.rows})"
                )
                bench.sql("VACUUM ANALYZE outbox")
                bench.sql("CHECKPOINT")
                time.sleep(1)  # pg_stat_wal is flushed by each backend within a second
                lsn, fpi = bench.sql("SELECT pg_current_wal_lsn(), wal_fpi FROM pg_stat_wal")[0]
                run_pgbench(url, variant, clients=args.clients, transactions=per_client)
                time.sleep(1)
                wal, fpi_after = bench.sql(
                    f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}'), wal_fpi FROM pg_stat_wal"
                )[0]
                per = float(wal) / total
                images = (fpi_after - fpi) / total
                results[name].append((per, images))
                print(f"  {name}: {per:,.0f} WAL bytes and {images:.2f} full-page images per redemption")
        print(
            f"{args.rows:,} outbox rows, {total:,} redemptions per run, {args.clients} clients,"
            f" {args.rounds} round(s), after a CHECKPOINT:"
        )
        medians = {}
        for name, runs in results.items():
            bytes_sorted = sorted(r[0] for r in runs)
            medians[name] = bytes_sorted[len(bytes_sorted) // 2]
            print(f"  {name}: median {medians[name]:,.0f} WAL bytes per redemption")
        before, after = medians.values()
        print(f"wal per redemption after/before {after / before:.2f} ({after:,.0f} / {before:,.0f} bytes)")
    finally:
        bench.close()


if __name__ == "__main__":
    main()
