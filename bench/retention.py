"""Table sizes over a simulated quarter with retention (issue 28, part 4).

Each simulated day writes --per-day rows of each kind retention looks at, dated that day and finished
(published outbox rows, delivered SMS with a provider id, delivered webhook events with an attempt),
then runs the housekeeping's retention() as of that day and a plain VACUUM (what autovacuum does
between two days). With RETENTION_DAYS (30) the tables grow for a month and then stay flat: the
sizes of every tenth day are printed, and the last line compares day --days with day 45.

    .venv/bin/python bench/retention.py                   # 90 days, 20,000 rows of each kind a day

Embedded PostgreSQL under a temporary folder unless DATABASE_URL is set (a scratch database).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ceiling import run_pgbench  # noqa: E402
from bench.redeem import Bench, ceiling_script  # noqa: E402

TABLES = ("outbox", "sms_messages", "sms_provider_messages", "webhook_events", "webhook_attempts")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--per-day", type=int, default=20_000)
    args = parser.parse_args()
    bench = Bench(argparse.Namespace())
    try:
        bench.prepare(10)
        url = bench.env["DATABASE_URL"]
        run_pgbench(url, ceiling_script(bench, "budgeted"), clients=1, transactions=1)  # one redemption
        from service.kit.config import reset_settings_cache
        from service.kit.db.engine import reset_engine
        from workers.housekeeping import retention

        os.environ.update(DATABASE_URL=url, ENCRYPTION_KEY=bench.env["ENCRYPTION_KEY"])
        reset_settings_cache()
        reset_engine()
        redemption = bench.sql("SELECT id FROM redemptions LIMIT 1")[0][0]
        program = bench.sql("SELECT min(id) FROM programs")[0][0]
        bench.sql("DELETE FROM outbox")
        start = datetime.now(UTC) - timedelta(days=args.days)
        sizes: dict[int, dict[str, int]] = {}
        n = args.per_day
        for day in range(1, args.days + 1):
            at = start + timedelta(days=day)
            stamp = f"'{at.isoformat()}'::timestamptz + i * interval '1 ms'"
            bench.sql(
                "INSERT INTO outbox (message_id, queue, actor, payload, created_at, published_at)"
                f" SELECT uuid7(), 'sms_transactional', 'deliver_reward_sms', '{{}}', {stamp}, {stamp}"
                f" FROM generate_series(1, {n}) AS i"
            )
            bench.sql(
                "INSERT INTO sms_messages (redemption_id, send, msisdn, status, provider,"
                " provider_message_ids, deadline_at, sent_at, done_at, created_at)"
                f" SELECT '{redemption}', {day * n} + i, '+77050000000',"
                f" 'delivered', 'smpp', ARRAY['p-' || ({day * n} + i)], {stamp}, {stamp}, {stamp}, {stamp}"
                f" FROM generate_series(1, {n}) AS i"
            )
            bench.sql(
                "WITH e AS (INSERT INTO webhook_events"
                " (id, program_id, type, payload, created_at, delivered_at)"
                f" SELECT uuid7(), {program}, 'redemption.delivered', '{{}}', {stamp}, {stamp}"
                f" FROM generate_series(1, {n}) AS i RETURNING id, created_at)"
                " INSERT INTO webhook_attempts (event_id, attempted_at, status_code)"
                " SELECT id, created_at, 200 FROM e"
            )
            removed = retention(now=at)
            bench.sql("VACUUM " + ", ".join(TABLES))
            if day % 10 == 0 or day == 45 or day == args.days:
                sizes[day] = {t: bench.sql(f"SELECT pg_total_relation_size('{t}')")[0][0] for t in TABLES}
                rows = {t: bench.sql(f"SELECT count(*) FROM {t}")[0][0] for t in ("outbox", "webhook_events")}
                print(
                    f"day {day:>3}: "
                    + ", ".join(f"{t} {sizes[day][t] / 2**20:.1f} MB" for t in TABLES)
                    + f"; rows: outbox {rows['outbox']:,}, webhook_events {rows['webhook_events']:,};"
                    f" removed that day {removed}"
                )
        last, mid = sizes[args.days], sizes.get(45) or sizes[max(sizes)]
        print(
            f"sizes day {args.days}/day 45: "
            + ", ".join(f"{t} {last[t] / mid[t]:.2f}" for t in TABLES)
            + " (sms_messages is never removed: it grows)"
        )
    finally:
        bench.close()


if __name__ == "__main__":
    main()
