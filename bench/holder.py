"""The holders' reward page under load: GET /r/<token> with 32 clients (wrk), beside the floor of the
same database in the same run, `SELECT 1` by pgbench with as many clients.

Starts an embedded PostgreSQL and Redis under a temporary folder (unless DATABASE_URL/REDIS_URL are
set), applies the demo catalog, fills a code pool, starts `rewards api` (2 workers), redeems --rewards
codes and cards through the API and takes their `reward_url`; then wrk fetches those pages in turn,
each request a full page (rate limit check, token hash, lookup, catalog, render). Every answer is
checked: a 200 with the page's own marker (the "show" form of a code, the balance of a card), not an
error page; the last line says whether every request did that work.

    .venv/bin/python bench/holder.py                       # 32 clients, 20 s
    .venv/bin/python bench/holder.py --clients 64 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ceiling import pgbench_binary  # noqa: E402
from bench.redeem import Bench, free_port, percentile  # noqa: E402
from tests.harness.stack import wait_ready  # noqa: E402

WRK_SCRIPT = r"""
local paths = {}
local counter = 0
bad = 0  -- a global: done() reads each thread's count with thread:get()
local threads = {}
for line in io.lines(PATHS) do table.insert(paths, line) end
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  bad = 0
end
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1], {["Accept-Language"] = "ru"})
end
response = function(status, headers, body)
  -- the page did its work: a 200 carrying the reward page's own marker, not an error page
  if status ~= 200 or not string.find(body, 'data-page="reward"', 1, true) then
    bad = bad + 1
  end
end
done = function(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do wrong = wrong + thread:get("bad") end
  io.write(string.format('{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non_2xx":%d,'
    .. '"socket_errors":%d,"not_the_page":%d}\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, wrong))
end
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--rewards", type=int, default=200, help="reward pages fetched in turn")
    parser.add_argument("--api-workers", type=int, default=2)
    return parser.parse_args()


def prepare(bench: Bench, base: str, rewards: int) -> list[str]:
    """Redemptions through the API (codes and cards, half each): their reward pages' paths."""
    key = (
        bench.rewards("keys", "create", "--role", "loyalty", "--program", "mobile-bonus", "--name", "bench")
        .strip()
        .splitlines()[-1]
    )
    paths = []
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        for i in range(rewards):
            card = i % 2 == 1
            body = {
                "program": "mobile-bonus",
                "tariff": "basic",
                "offer": "gift-card-5000" if card else "cinema-2000",
                "points": 5000 if card else 2000,
                "msisdn": f"8705{i:07d}",
                "external_id": f"holder-bench-{i}",
            }
            made = http.post("/v1/redemptions", json=body, headers={"Idempotency-Key": f"hb-{i}"})
            made.raise_for_status()
            url = made.json()["reward_url"]
            paths.append(re.sub(r"^https?://[^/]+", "", url))
    return paths


def run_wrk(base: str, paths: list[str], clients: int, seconds: float, warmup: float, work: Path) -> dict:
    listing = work / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = work / "holder.lua"
    script.write_text(f'PATHS="{listing}"\n' + WRK_SCRIPT)
    result: dict = {}
    for duration in (warmup, seconds):
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(clients), "-d", f"{max(1, int(duration))}s", "--timeout", "10s",
             "-s", str(script), base],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        result = json.loads(out.strip().splitlines()[-1])
    return result


def select_one(database_url: str, clients: int, seconds: int, work: Path) -> dict:
    """pgbench `SELECT 1` with `clients` connections: throughput and per-statement latency."""
    script = work / "select1.sql"
    script.write_text("SELECT 1;\n")
    logs = work / "pglog"
    logs.mkdir(exist_ok=True)
    done = subprocess.run(
        [pgbench_binary(), "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
         "-f", str(script), "-l", "--log-prefix", str(logs / "tx"), database_url],
        capture_output=True, text=True, cwd=work,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed: {done.stderr[-2000:]}")
    latencies = sorted(
        int(line.split()[2]) / 1000 for path in logs.iterdir() for line in path.read_text().splitlines()
    )
    tps = float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]
    return {"tps": tps, "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def main() -> None:
    args = parse_args()
    bench = Bench(argparse.Namespace(codes=args.rewards))
    api = None
    try:
        bench.rewards("migrate")
        bench.rewards("catalog", "apply", str(ROOT / "catalog" / "demo"))
        pool = bench.work / "codes.csv"
        pool.write_text(
            "".join(f"BENCH-{secrets.token_hex(6).upper()},,2030-12-31\n" for _ in range(args.rewards))
        )
        bench.rewards("codes", "import", "ARAY-CINEMA-2000", str(pool))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **bench.env,
            "PUBLIC_URL": base,
            # Every request must reach the page: the limits are counted (the Redis round trip is part
            # of each request) but set above what the run sends.
            "HOLDER_RATE_PER_TOKEN": "100000000",
            "HOLDER_RATE_PER_ADDRESS": "100000000",
        }
        api = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "api", "--port", str(port),
             "--workers", str(args.api_workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_ready(base)
        paths = prepare(bench, base, args.rewards)
        floor_before = select_one(bench.env["DATABASE_URL"], args.clients, int(args.seconds), bench.work)
        started = time.monotonic()
        page = run_wrk(base, paths, args.clients, args.seconds, args.warmup, bench.work)
        took = time.monotonic() - started
        floor_after = select_one(bench.env["DATABASE_URL"], args.clients, int(args.seconds), bench.work)
        api.terminate()
        api.wait(timeout=30)
        api = None
        seconds = page["duration_us"] / 1e6
        good = page["requests"] - page["non_2xx"] - page["socket_errors"] - page["not_the_page"]
        p50, p99 = page["p50_us"] / 1000, page["p99_us"] / 1000
        print(
            f"reward page GET /r/<token>, {len(paths)} rewards (codes and cards) in turn,"
            f" {args.clients} clients,"
            f" {args.api_workers} API workers, {seconds:.0f} s measured after {args.warmup:.0f} s warm-up"
            f" (wall {took:.0f} s)"
        )
        print(
            f"  pages/s: {good / seconds:.0f}   requests: {page['requests']}, non-200: {page['non_2xx']},"
            f" socket errors: {page['socket_errors']}, not the page: {page['not_the_page']}"
        )
        print(f"  latency ms: p50 {p50:.1f}  p99 {p99:.1f}")
        for name, floor in (("before", floor_before), ("after", floor_after)):
            print(
                f"  SELECT 1 (pgbench, same database, {args.clients} clients, {name}):"
                f" {floor['tps']:.0f} tps,"
                f" p50 {floor['p50_ms']:.3f} ms, p99 {floor['p99_ms']:.3f} ms"
            )
        floor_p50 = (floor_before["p50_ms"] + floor_after["p50_ms"]) / 2
        floor_p99 = (floor_before["p99_ms"] + floor_after["p99_ms"]) / 2
        print(
            f"  page / SELECT 1: p50 x{p50 / max(floor_p50, 0.001):.0f},"
            f" p99 x{p99 / max(floor_p99, 0.001):.0f}"
            f"  (page - SELECT 1: p50 +{p50 - floor_p50:.1f} ms, p99 +{p99 - floor_p99:.1f} ms)"
        )
        every = good == page["requests"] and page["requests"] > 0
        print(
            f"every request did the work: {'yes' if every else 'NO'}"
            f" ({good} of {page['requests']} were the page)"
        )
        if not every:
            raise SystemExit(1)
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        bench.close()


if __name__ == "__main__":
    main()
