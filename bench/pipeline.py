"""The hot path's pipeline, public psycopg API against the one-write overrides, in one run.

service/kit/db/pipeline.py uses only psycopg's public API: a pipeline's statements go to PostgreSQL
in one write each, in one round trip. Until issue 23 it overrode private methods of psycopg 3.3's
pipeline class so that they went in one write (bench/one_write_pipeline.py keeps that version). This
runs `rewards api` from this checkout and from a copy of it with the old module in place, on the same
database, in alternating rounds (so that the machine's drift hits both alike), and prints for each
the redemptions per second and the CPU each redemption cost the API and PostgreSQL (CPU per
redemption depends less on the rest of the machine than throughput does).

    .venv/bin/python bench/pipeline.py [--rounds 3] [--seconds 10] [--clients 16]

The last line is the verdict: the one-write pipeline's figures as a share of the public one's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.redeem import Bench, CpuMeter, free_port, postmaster_pid, run_wrk  # noqa: E402
from tests.harness.stack import wait_ready  # noqa: E402


def one_write_checkout(work: Path) -> Path:
    """A copy of this checkout's code with the one-write pipeline module in place of the public one."""
    root = work / "one-write"
    for package in ("service", "catalog", "workers"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "bench" / "one_write_pipeline.py", root / "service" / "kit" / "db" / "pipeline.py")
    return root


def measure(bench: Bench, key: str, root: Path, args: argparse.Namespace, run: str) -> dict:
    port = free_port()
    env = {**bench.env, "PYTHONPATH": str(root)}
    api = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--port", str(port), "--workers", str(args.api_workers)],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        meter = CpuMeter(api.pid, postmaster_pid(bench.env["DATABASE_URL"]))
        work = bench.work / run
        work.mkdir()
        result = run_wrk(base, key, args.clients, args.seconds, args.warmup, "budgeted", work, meter)
    finally:
        api.terminate()
        api.wait(timeout=30)
    n = max(result["statuses"]["201"], 1)
    return {
        "rps": result["rps"],
        "api_ms": 1000 * meter.spent["api"] / n,
        "pg_ms": 1000 * meter.spent["postgres"] / n,
        "failed": result["statuses"]["other"] + result["statuses"]["socket errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--api-workers", type=int, default=2)
    args = parser.parse_args()
    bench = Bench(argparse.Namespace(**vars(args), limit=False))
    try:
        codes = int(2 * args.rounds * args.clients * 60 * (args.seconds + args.warmup)) + 1000
        key = bench.prepare(codes)
        variants = {"public": ROOT, "one-write": one_write_checkout(Path(tempfile.mkdtemp(dir=bench.work)))}
        figures: dict[str, list[dict]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                figures[name].append(measure(bench, key, variants[name], args, f"{name}-{round_}"))
                got = figures[name][-1]
                print(
                    f"round {round_ + 1} {name:9}: {got['rps']:.0f} redemptions/s,"
                    f" CPU ms per redemption API {got['api_ms']:.2f} PostgreSQL {got['pg_ms']:.2f}"
                    f" (failed {got['failed']})",
                    flush=True,
                )
        medians = {
            name: {k: statistics.median(f[k] for f in runs) for k in ("rps", "api_ms", "pg_ms")}
            for name, runs in figures.items()
        }
        for name, m in medians.items():
            print(
                f"{name:9} median: {m['rps']:.0f} redemptions/s, CPU ms per redemption"
                f" API {m['api_ms']:.2f}, PostgreSQL {m['pg_ms']:.2f}"
            )
        public, one = medians["public"], medians["one-write"]
        print(
            f"one-write / public: throughput {one['rps'] / public['rps']:.2f},"
            f" API CPU {one['api_ms'] / public['api_ms']:.2f},"
            f" PostgreSQL CPU {one['pg_ms'] / public['pg_ms']:.2f}"
        )
    finally:
        bench.close()


if __name__ == "__main__":
    main()
