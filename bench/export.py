"""Exports N reconciliation records with `rewards export` as CSV and as XLSX, printing the time and
the peak RSS of each export process. Embedded PostgreSQL under a temporary folder unless DATABASE_URL
is set. Records are generated in the database with INSERT ... SELECT generate_series (through the
booking trigger, like every writer).

    .venv/bin/python bench/export.py                 # 1,000,000 records
    .venv/bin/python bench/export.py --records 200000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GENERATE = """
INSERT INTO reconciliation_records (type, occurred_at, program_id, tariff_id, offer_id, product_id, sku,
  partner_id, quantity, currency, face_value_minor, cost_minor, vat_rate_bp, vat_minor, code_fingerprint,
  code_last4, redemption_id)
SELECT CASE WHEN g %% 50 = 0 THEN 'cancel' ELSE 'issue' END,
       timestamptz '2026-03-01 00:00+05' + (g * interval '2 seconds'),
       o.program_id, t.id, o.id, p.id, p.sku, p.partner_id,
       CASE WHEN g %% 50 = 0 THEN -1 ELSE 1 END, p.currency,
       CASE WHEN g %% 50 = 0 THEN -p.face_value_minor ELSE p.face_value_minor END,
       CASE WHEN g %% 50 = 0 THEN -p.cost_price_minor ELSE p.cost_price_minor END,
       1600, CASE WHEN g %% 50 = 0 THEN -1 ELSE 1 END * ((p.face_value_minor * 1600 * 2 + 11600) / 23200),
       sha256(int8send(g)), lpad((g %% 10000)::text, 4, '0'), NULL
FROM generate_series(1, %(n)s) g
JOIN offers o ON o.code = 'cinema-2000'
  AND o.program_id = (SELECT id FROM programs WHERE code = 'mobile-bonus')
JOIN products p ON p.id = o.product_id
JOIN tariffs t ON t.program_id = o.program_id AND t.code = 'basic'
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--formats", default="csv,xlsx")
    args = parser.parse_args()

    import psycopg

    from bench._stack import demo_database
    from service.kit.db.engine import libpq_url

    with demo_database("bench-export-") as stack:
        work, env = stack.work, stack.env
        started = time.perf_counter()
        with psycopg.connect(libpq_url(env["DATABASE_URL"]), autocommit=True) as conn:
            conn.execute(GENERATE, {"n": args.records})
            conn.execute("VACUUM ANALYZE reconciliation_records")
        print(f"generated {args.records:,} records in {time.perf_counter() - started:.1f} s")

        for fmt in args.formats.split(","):
            out = work / f"records.{fmt}"
            started = time.perf_counter()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service.cli",
                    "export",
                    "--format",
                    fmt,
                    "--program",
                    "mobile-bonus",
                    "--output",
                    str(out),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            _, _, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - started
            stdout = proc.stdout.read().strip()
            proc.stdout.close()
            if proc.returncode not in (0, None) and not stdout:
                sys.exit(f"export {fmt} failed")
            print(
                f"{fmt:>5}: {args.records:,} records in {elapsed:.1f} s"
                f" ({args.records / elapsed:,.0f} records/s), {out.stat().st_size / 1e6:.0f} MB file,"
                f" peak RSS of the export process {usage.ru_maxrss / 1024:.0f} MB"
            )
            print(f"       {stdout}")
            out.unlink()


if __name__ == "__main__":
    main()
