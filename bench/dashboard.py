"""Times each query of the console's live dashboard on a database of 1,000,000 redemptions.

The rows are generated in the database (INSERT ... SELECT generate_series): 60 days of traffic ending
now with a day/night rhythm, the demo catalog's programs and offers in realistic shares, one SMS per
redemption (delivered 3-12 s after the redemption, some failed, the last minutes still on their way),
a code or a card behind every redemption, pools of available codes, a budget counter and an outbox
with a backlog. Ids are UUIDv7 made from each row's creation time, as the service makes them.

Each dashboard query is then run through the console's own functions (service/console/dashboard.py)
for three viewers (admin: everything; a support agent scoped to one program; a partner), 30 times
each after a warm-up; the script prints the median and the worst time and the plan's summary (from
EXPLAIN ANALYZE). Beside them, in the same run: the floor (a `SELECT 1` round trip) and what a full
scan of the table costs (`count(*)` of all redemptions) — what the indexes save.

    .venv/bin/python bench/dashboard.py                      # 1,000,000 redemptions
    .venv/bin/python bench/dashboard.py --redemptions 200000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# One plan row per redemption: its time (60 days ending now; the hours of the day weighted by a sine,
# quiet at night in Almaty), its offer (shares by g % 20) and its outcome.
PLAN = """
CREATE UNLOGGED TABLE bench_plan AS
WITH g AS (
  SELECT g, now() - interval '60 days' * (1 - (g::float8 / %(n)s)) AS t0 FROM generate_series(1, %(n)s) g
), timed AS (
  -- pull each row toward the busy hours: a shift of up to 2 hours toward 15:00 Almaty
  SELECT g, t0 - interval '1 hour' * 2
    * sin(pi() * (extract(hour FROM t0 AT TIME ZONE 'Asia/Almaty') - 3) / 12)
    * (abs(hashint4(g)) %% 100) / 100.0 AS created_at FROM g
), mix(slot, program, offer, tariff) AS (VALUES
  (0, 'mobile-bonus', 'cinema-2000', 'basic'), (1, 'mobile-bonus', 'cinema-2000', 'plus'),
  (2, 'mobile-bonus', 'cinema-2000', 'basic'), (3, 'mobile-bonus', 'cinema-2000', 'unlimited'),
  (4, 'mobile-bonus', 'cinema-2000', 'basic'), (5, 'mobile-bonus', 'cinema-2000', 'plus'),
  (6, 'mobile-bonus', 'books-5000', 'basic'), (7, 'mobile-bonus', 'books-5000', 'plus'),
  (8, 'mobile-bonus', 'books-5000', 'unlimited'), (9, 'mobile-bonus', 'taxi-1500', 'plus'),
  (10, 'mobile-bonus', 'taxi-1500', 'unlimited'), (11, 'mobile-bonus', 'gift-card-5000', 'basic'),
  (12, 'mobile-bonus', 'gift-card-5000', 'plus'), (13, 'home-internet', 'cinema-2000', 'home-100'),
  (14, 'home-internet', 'cinema-2000', 'home-500'), (15, 'home-internet', 'gift-card-10000', 'home-1000'),
  (16, 'business', 'gift-card-20000', 'biz-start'), (17, 'business', 'books-5000', 'biz-pro'),
  (18, 'mobile-bonus', 'cinema-2000', 'basic'), (19, 'home-internet', 'cinema-2000', 'home-100')
)
SELECT g.g, t.created_at,
  CAST(lpad(to_hex(CAST(floor(extract(epoch FROM t.created_at) * 1000) AS bigint)), 12, '0')
    || '7' || substr(md5(g.g::text), 1, 3) || '8' || substr(md5(g.g::text), 4, 15) AS uuid) AS id,
  pg.id AS program_id, tf.id AS tariff_id, o.id AS offer_id, o.product_id, pr.kind, pr.partner_id,
  op.nominal_minor, op.points, pr.currency,
  CASE WHEN t.created_at > now() - interval '2 minutes' THEN 'accepted'
       WHEN t.created_at > now() - interval '5 minutes' THEN 'sent'
       WHEN abs(hashint4(g.g + 7)) %% 100 < 2 THEN 'cancelled'
       WHEN abs(hashint4(g.g + 7)) %% 100 < 5 THEN 'failed'
       ELSE 'delivered' END AS status,
  3 + abs(hashint4(g.g + 11)) %% 10 AS delivery_seconds
FROM g JOIN timed t USING (g)
JOIN mix ON mix.slot = g.g %% 20
JOIN programs pg ON pg.code = mix.program
JOIN tariffs tf ON tf.program_id = pg.id AND tf.code = mix.tariff
JOIN offers o ON o.program_id = pg.id AND o.code = mix.offer
JOIN products pr ON pr.id = o.product_id
JOIN offer_prices op ON op.offer_id = o.id AND op.tariff_id = tf.id
"""

FILL = [
    # the reward behind each redemption: its code (id = g) or its card (id = g)
    """INSERT INTO codes (id, product_id, partner_id, fingerprint, last4, code_enc, expires_at, status,
         created_at, status_changed_at)
       SELECT g, product_id, partner_id, sha256(int8send(g)), lpad((g %% 10000)::text, 4, '0'),
         sha256(int8send(-g)), NULL,
         CASE status WHEN 'accepted' THEN 'reserved' WHEN 'cancelled' THEN 'voided' ELSE 'issued' END,
         created_at - interval '30 days', created_at
       FROM bench_plan WHERE kind = 'code'""",
    """INSERT INTO cards (id, product_id, number_fingerprint, number_enc, last4, pin_enc, currency,
         nominal_minor, balance_minor, status, expires_at, created_at)
       SELECT g, product_id, sha256(int8send(g)), sha256(int8send(-g)), lpad((g %% 10000)::text, 4, '0'),
         sha256(int8send(g * 7)), currency, nominal_minor, nominal_minor,
         CASE status WHEN 'cancelled' THEN 'cancelled' ELSE 'active' END, created_at + interval '1 year',
         created_at
       FROM bench_plan WHERE kind = 'universal_card'""",
    """INSERT INTO redemptions (id, program_id, tariff_id, offer_id, product_id, external_id, msisdn, locale,
         points, currency, nominal_minor, code_id, card_id, reward_last4, status, status_reason,
         first_sent_at, created_at, updated_at)
       SELECT id, program_id, tariff_id, offer_id, product_id, 'bench-' || g,
         '+7701' || lpad((abs(hashint4(g)) %% 10000000)::text, 7, '0'), 'ru', points, currency, nominal_minor,
         CASE WHEN kind = 'code' THEN g END, CASE WHEN kind = 'universal_card' THEN g END,
         lpad((g %% 10000)::text, 4, '0'), status,
         CASE status WHEN 'failed' THEN 'undeliverable' WHEN 'cancelled' THEN 'cancelled by request' END,
         CASE WHEN status IN ('sent', 'delivered', 'failed') THEN created_at + interval '1 second' END,
         created_at, created_at + delivery_seconds * interval '1 second'
       FROM bench_plan ORDER BY g""",
    """INSERT INTO sms_messages (redemption_id, send, msisdn, status, provider, segments, locale, attempts,
         deadline_at, submit_started_at, sent_at, done_at, created_at, updated_at)
       SELECT id, 0, '+77010000000',
         CASE status WHEN 'accepted' THEN 'pending' ELSE status END,
         CASE WHEN status <> 'accepted' THEN 'smpp' END, 2, 'ru',
         CASE WHEN status = 'accepted' THEN 0 ELSE 1 END,
         created_at + interval '24 hours',
         CASE WHEN status <> 'accepted' THEN created_at + interval '1 second' END,
         CASE WHEN status IN ('sent', 'delivered', 'failed') THEN created_at + interval '1 second' END,
         CASE WHEN status IN ('delivered', 'failed')
           THEN created_at + delivery_seconds * interval '1 second' END,
         created_at, created_at + delivery_seconds * interval '1 second'
       FROM bench_plan WHERE status <> 'cancelled' ORDER BY g""",
    # pools still to issue from: 20,000 available codes per code product, a tenth of them expiring
    """INSERT INTO codes (id, product_id, partner_id, fingerprint, last4, code_enc, expires_at, status)
       SELECT 10000000 + p.id * 100000 + s, p.id, p.partner_id,
         sha256(int8send(10000000 + p.id * 100000 + s)),
         lpad((s %% 10000)::text, 4, '0'), sha256(int8send(-s)),
         CASE WHEN s %% 10 = 0 THEN now() + interval '20 days' END, 'available'
       FROM products p, generate_series(1, 20000) s WHERE p.kind = 'code'""",
    "SELECT setval(pg_get_serial_sequence('codes', 'id'), (SELECT max(id) FROM codes))",
    "SELECT setval(pg_get_serial_sequence('cards', 'id'), (SELECT max(id) FROM cards))",
    # the budget counters of this month, as redeem() keeps them
    """INSERT INTO program_budget_usage (program_id, month, spent_minor)
       SELECT b.program_id, CAST(date_trunc('month', now() AT TIME ZONE p.timezone) AS date),
         sum(b.nominal_minor)
       FROM bench_plan b JOIN programs p ON p.id = b.program_id
       WHERE p.monthly_budget_minor IS NOT NULL AND b.status <> 'cancelled'
         AND b.created_at >= date_trunc('month', now() AT TIME ZONE p.timezone) AT TIME ZONE p.timezone
       GROUP BY b.program_id, p.timezone""",
    # the outbox: 200,000 published rows and a backlog of 40
    """INSERT INTO outbox (message_id, queue, actor, payload, created_at, published_at)
       SELECT gen_random_uuid(), 'sms_transactional', 'deliver_reward_sms', '{}'::jsonb,
         now() - interval '1 second' * s, CASE WHEN s > 40 THEN now() - interval '1 second' * s END
       FROM generate_series(1, 200000) s""",
    "DROP TABLE bench_plan",
]


def _summary(plan: dict) -> str:
    """The plan's node types and the indexes it reads, e.g. 'Aggregate < Index Only Scan (pk_redemptions)'."""
    nodes: list[str] = []

    def walk(node: dict) -> None:
        name = node["Node Type"]
        if node.get("Index Name"):
            name += f" ({node['Index Name']})"
        elif node.get("Relation Name") and "Scan" in name:
            name += f" ({node['Relation Name']})"
        if name not in nodes:
            nodes.append(name)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return " < ".join(nodes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redemptions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    import psycopg
    from sqlalchemy import event, text

    from bench._stack import demo_database

    with demo_database("rewards-bench-dashboard-") as stack:
        os.environ.update({k: stack.env[k] for k in ("DATABASE_URL", "ENCRYPTION_KEY")})
        url = stack.env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")  # bulk fill: no FK checks per row
            conn.execute(PLAN, {"n": args.redemptions})
            for statement in FILL:
                conn.execute(statement, {})  # the statements write %% for %
            conn.execute("SET session_replication_role = DEFAULT")
            conn.execute("VACUUM ANALYZE")
            counts = {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("redemptions", "sms_messages", "codes", "cards", "outbox")
            }
        print(
            f"filled in {time.perf_counter() - started:.0f} s: "
            + ", ".join(f"{t} {n:,}" for t, n in counts.items())
        )

        from service.catalog.snapshot import get_snapshot
        from service.console import dashboard
        from service.kit.db.engine import get_engine, new_session

        captured: list[tuple[str, object]] = []

        def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
            captured.append((statement, parameters))

        with new_session() as session:
            snap = get_snapshot(session)
            viewers = {
                "admin (all programs)": dashboard.Scope(None, None),
                "support, one program": dashboard.Scope([snap.programs["mobile-bonus"].id], None),
                "partner aray-cinema": dashboard.Scope([], "aray-cinema", sees_programs=False),
            }

            def timed(sql: str) -> list[float]:
                times = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    session.execute(text(sql)).all()
                    times.append((time.perf_counter() - t) * 1000)
                return times

            floor = timed("SELECT 1")
            scan = timed("SELECT count(*) FROM redemptions")[:5]
            print(f"floor: SELECT 1 round trip median {statistics.median(floor):.2f} ms")
            print(
                f"ceiling: count(*) of all {counts['redemptions']:,} redemptions"
                f" median {statistics.median(scan):.1f} ms"
            )
            print(f"{'query':<11} {'viewer':<22} {'median':>8} {'p95':>8} {'worst':>8}  plan [server time]")
            worst_of_all = worst_median = 0.0
            for viewer, scope in viewers.items():
                for name, query in dashboard.QUERIES.items():
                    now = datetime.now(UTC)
                    query(session, scope, now)  # warm-up
                    times = []
                    for _ in range(args.runs):
                        t = time.perf_counter()
                        query(session, scope, now)
                        times.append((time.perf_counter() - t) * 1000)
                    captured.clear()
                    event.listen(get_engine(), "before_cursor_execute", capture)
                    query(session, scope, now)
                    event.remove(get_engine(), "before_cursor_execute", capture)
                    plans = []
                    for statement, parameters in captured:
                        cursor = session.connection().connection.driver_connection.cursor()
                        cursor.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + statement, parameters)
                        plan = cursor.fetchone()[0]
                        plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
                        plans.append(f"{_summary(plan)} [{plan['Execution Time']:.1f} ms]")
                    worst_of_all = max(worst_of_all, max(times))
                    worst_median = max(worst_median, statistics.median(times))
                    print(
                        f"{name:<11} {viewer:<22} {statistics.median(times):>6.1f}ms"
                        f" {statistics.quantiles(times, n=20)[-1]:>6.1f}ms {max(times):>6.1f}ms  "
                        + ("; ".join(plans) if plans else "(nothing to ask for this viewer)")
                    )
            session.rollback()
        print(f"slowest median of any dashboard query: {worst_median:.1f} ms (target: under 50 ms)")
        print(f"slowest single run of any dashboard query: {worst_of_all:.1f} ms")


if __name__ == "__main__":
    main()
