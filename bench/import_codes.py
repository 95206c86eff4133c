"""Imports N generated codes with `rewards codes import` and prints the rate and the peak RSS of
the importing process. Embedded PostgreSQL under a temporary folder unless DATABASE_URL is set.

    .venv/bin/python bench/import_codes.py            # 1,000,000 codes
    .venv/bin/python bench/import_codes.py --codes 200000
"""

from __future__ import annotations

import argparse
import resource
import secrets
import string
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate(path: Path, count: int) -> None:
    alphabet = string.ascii_uppercase + string.digits
    rng = secrets.SystemRandom()
    with path.open("w") as fh:
        fh.write("code,pin,expires_at\n")
        for i in range(count):
            code = "BENCH-" + "".join(rng.choices(alphabet, k=12))
            pin = f"{rng.randrange(10000):04d}" if i % 2 else ""
            fh.write(f"{code},{pin},2030-12-31\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--sku", default="ARAY-CINEMA-2000")
    args = parser.parse_args()

    from bench._stack import demo_database

    with demo_database("bench-import-") as stack:
        work, env = stack.work, stack.env
        csv = work / "codes.csv"
        t = time.perf_counter()
        generate(csv, args.codes)
        print(
            f"generated {args.codes:,} codes ({csv.stat().st_size / 1e6:.1f} MB)"
            f" in {time.perf_counter() - t:.1f} s"
        )

        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "service.cli", "codes", "import", args.sku, str(csv)],
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if result.returncode:
            sys.exit(result.stderr)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(result.stdout.strip())
        print(
            f"imported {args.codes:,} codes in {elapsed:.1f} s: {args.codes / elapsed:,.0f} codes/s, "
            f"peak RSS of the import process {peak_mb:.0f} MB"
        )
        again = time.perf_counter()
        second = subprocess.run(
            [sys.executable, "-m", "service.cli", "codes", "import", args.sku, str(csv)],
            env=env,
            capture_output=True,
            text=True,
        )
        print(
            f"re-import of the same file (all duplicates) in {time.perf_counter() - again:.1f} s: "
            f"{second.stdout.strip()}"
        )


if __name__ == "__main__":
    main()
