"""Redemptions per second and latency at a fixed concurrency, over HTTP, on the embedded default.

Starts an embedded PostgreSQL and Redis under a temporary folder (unless DATABASE_URL/REDIS_URL are
set), applies the demo catalog, fills a code pool, starts `rewards api`, then drives
POST /v1/redemptions from a separate load process (asyncio + httpx, keep-alive connections), each
request a new subscriber, external id and Idempotency-Key, so every one is a full redemption.

    .venv/bin/python bench/redeem.py                          # 16 clients, 20 s
    .venv/bin/python bench/redeem.py --clients 32 --seconds 30 --api-workers 2
    .venv/bin/python bench/redeem.py --limit                  # and the database's ceiling, and the ratio

With --limit, pgbench runs the statements of one redemption (bench/ceiling.py builds them from the
service's own code) on the same database, with as many clients, before and after the API run; the
last line is `ratio = API redemptions/s / pgbench tps`. The machine drifts by a third between runs,
so only figures of one run are compared. The pool is sized for every run with room to spare
(ceiling.pool_size); a pgbench transaction that takes no code is an error, the codes left are printed
after each run, and when any run ran dry the last line is `no ratio: ...` and the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.stack import wait_ready  # noqa: E402


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


# Rounds of runs on one database (bench/scale.py) use subscribers of their own: the API's round r
# valid mobile numbers 8705r......, 8707r......, 8708r...... (r < 10, 10-19, 20-29), pgbench's
# +77(40+r)....... (bench/ceiling.py; SQL, so no number plan applies), and neither the grown
# database's +7701....... of bench/scale.py.
ROUNDS = 30


def subscribers(round_: int) -> str:
    """The local prefix of the API's subscribers in round `round_` (and 6 digits each)."""
    if not 0 <= round_ < ROUNDS:
        raise SystemExit(f"at most {ROUNDS} rounds of runs on one database")
    return ("8705", "8707", "8708")[round_ // 10] + str(round_ % 10)


def ceiling_subscribers(round_: int) -> str:
    """The E.164 prefix of pgbench's subscribers in its round `round_` (two a measure(): before, after)."""
    if not 0 <= round_ < 2 * ROUNDS:
        raise SystemExit(f"at most {2 * ROUNDS} pgbench rounds on one database")
    return f"+77{40 + round_:02d}"


SKU = "ARAY-CINEMA-2000"  # the product of both offers, whose pool the bench fills
OFFERS = {  # name -> (program, tariff, offer, points)
    "budgeted": ("mobile-bonus", "basic", "cinema-2000", 2000),
    "unbudgeted": ("home-internet", "home-100", "cinema-2000", 2200),
}


async def load(
    base: str, key: str, clients: int, seconds: float, warmup: float, offer: str, round_: int = 0
) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counter = iter(range(10**9))
    deadline_warm = time.perf_counter() + warmup
    deadline = deadline_warm + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                n = next(counter)
                program, tariff, code, points = OFFERS[offer]
                body = {
                    "program": program,
                    "tariff": tariff,
                    "offer": code,
                    "points": points,
                    "msisdn": f"{subscribers(round_)}{n:06d}",
                    "external_id": f"bench-{round_}-{n}",
                }
                started = time.perf_counter()
                response = await http.post(
                    "/v1/redemptions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"b-{round_}-{n}"},
                )
                elapsed = time.perf_counter() - started
                if started >= deadline_warm:
                    latencies.append(elapsed)
                    label = (
                        str(response.status_code)
                        if response.status_code == 201
                        else f"{response.status_code} {response.json().get('code')}"
                    )
                    statuses[label] = statuses.get(label, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "statuses": statuses,
        "rps": statuses.get("201", 0) / seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


WRK_SCRIPT = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local n = string.format("%d%05d", tid, counter)
  local body = string.format('{"program":"%s","tariff":"%s","offer":"%s","points":%d,"msisdn":"%s%s",'
    .. '"external_id":"%s-%s"}', PROGRAM, TARIFF, OFFER, POINTS, PREFIX, n, RUN, n)
  return wrk.format("POST", "/v1/redemptions", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. KEY, ["Idempotency-Key"] = RUN .. "-" .. n}, body)
end
done = function(summary, latency, requests)
  io.write(string.format('{"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,'
    .. '"non_2xx":%d,"socket_errors":%d}\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(95), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def run_wrk(
    base: str,
    key: str,
    clients: int,
    seconds: float,
    warmup: float,
    offer: str,
    work: Path,
    meter: CpuMeter | None = None,
    round_: int = 0,
) -> dict:
    """wrk against `base` (a warm-up run, then the measured one); `round_` numbers the API runs on one
    database: each round's subscribers, external ids and Idempotency-Keys are its own, so that a later
    round is never answered by the replay of an earlier one's stored response or refused by the
    subscriber's limits."""
    program, tariff, code, points = OFFERS[offer]
    results = {}
    for run, duration in (("warm", warmup), ("measured", seconds)):
        if run == "measured" and meter:
            meter.start()
        script = work / f"redeem-{run}.lua"
        script.write_text(
            f'PROGRAM="{program}" TARIFF="{tariff}" OFFER="{code}" POINTS={points} KEY="{key}"'
            f' RUN="{run}{round_}" PREFIX="{subscribers(round_)}"\n' + WRK_SCRIPT
        )
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(min(2, clients)),  # wrk refuses more threads than connections
                "-c",
                str(clients),
                "-d",
                f"{max(1, int(duration))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                base,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results = json.loads(out.strip().splitlines()[-1])
    if meter:
        meter.stop()
    seconds_measured = results["duration_us"] / 1e6
    ok = results["requests"] - results["non_2xx"] - results["socket_errors"]
    return {
        "requests": results["requests"],
        "seconds": seconds_measured,
        "statuses": {"201": ok, "other": results["non_2xx"], "socket errors": results["socket_errors"]},
        "rps": ok / seconds_measured,
        "p50_ms": results["p50_us"] / 1000,
        "p95_ms": results["p95_us"] / 1000,
        "p99_ms": results["p99_us"] / 1000,
        "mean_ms": float("nan"),
    }


class CpuMeter:
    """CPU seconds spent, during the measured window, by the API's processes, by PostgreSQL's and by
    the load generator: per redemption, these do not depend on what else the machine is doing the way
    throughput does."""

    def __init__(self, api_pid: int, postmaster_pid: int):
        self.api = psutil.Process(api_pid)
        self.postmaster = psutil.Process(postmaster_pid)
        self.before: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    @staticmethod
    def _tree(process: psutil.Process) -> float:
        total = 0.0
        for p in [process, *process.children(recursive=True)]:
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def _read(self) -> dict[str, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
        idle = psutil.cpu_times()
        return {
            "api": self._tree(self.api),
            "postgres": self._tree(self.postmaster),
            "load": children.ru_utime + children.ru_stime,
            "wall": time.monotonic(),
            "idle": idle.idle + getattr(idle, "iowait", 0.0),
        }

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> None:
        after = self._read()
        self.spent = {k: after[k] - self.before[k] for k in after}

    def report(self, redemptions: int) -> str:
        n = max(redemptions, 1)
        busy = 1 - self.spent["idle"] / (self.spent["wall"] * (psutil.cpu_count() or 1))
        return (
            f"  CPU ms per redemption: API {1000 * self.spent['api'] / n:.2f},"
            f" PostgreSQL {1000 * self.spent['postgres'] / n:.2f},"
            f" load generator {1000 * self.spent['load'] / n:.2f}"
            f" (the machine was {100 * busy:.0f} % busy, other work included)"
        )


def postmaster_pid(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        data_directory = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
    return int((Path(data_directory) / "postmaster.pid").read_text().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument(
        "--api-workers", type=int, default=2, help="uvicorn workers (the service default, API_WORKERS)"
    )
    parser.add_argument(
        "--codes",
        type=int,
        default=30000,
        help="codes beyond what the runs may take (ceiling.pool_size of clients and seconds)",
    )
    parser.add_argument(
        "--pool",
        type=int,
        help="the pool's size instead of the sized one (e.g. a small one, to see a dry run refused)",
    )
    parser.add_argument(
        "--offer",
        choices=sorted(OFFERS),
        default="budgeted",
        help="budgeted: the program has a monthly budget (a shared counter); unbudgeted: it has none",
    )
    parser.add_argument(
        "--driver",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (C, Lua script; default when installed) or asyncio+httpx",
    )
    parser.add_argument(
        "--limit",
        action="store_true",
        help="also run pgbench on the same database with the statements of one redemption, before and"
        " after the API run, and print ratio = API redemptions/s / pgbench tps as the last line",
    )
    parser.add_argument(
        "--api-root",
        type=Path,
        help="run `rewards api` from this checkout instead (e.g. a git worktree of an older commit),"
        " against the same database: two versions of the code in one run",
    )
    parser.add_argument("--load-only", nargs=2, metavar=("BASE", "KEY"), help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


class Bench:
    """A migrated database with the demo catalog, a filled pool and a loyalty key."""

    def __init__(self, args: argparse.Namespace):
        from service.kit.embedded import EmbeddedPostgres, EmbeddedRedis

        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-redeem-"))
        self.started: list = []
        self.rounds = 0  # measure() runs on this database so far
        self.env = {
            **os.environ,
            "LOG_LEVEL": "WARNING",
            "ENCRYPTION_KEY": os.environ.get("ENCRYPTION_KEY")
            or base64.b64encode(secrets.token_bytes(32)).decode(),
        }
        if not self.env.get("DATABASE_URL"):
            pg = EmbeddedPostgres(self.work / "pg")
            self.env["DATABASE_URL"] = pg.start()
            self.started.append(pg)
        if not self.env.get("REDIS_URL"):
            rd = EmbeddedRedis(self.work / "redis")
            self.env["REDIS_URL"] = rd.start()
            self.started.append(rd)

    def rewards(self, *cli: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *cli],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def prepare(self, codes: int) -> str:
        """setup() and a pool of `codes` codes imported by `rewards codes import`; the loyalty key."""
        key = self.setup()
        # Every code with an expiry, as real pools have.
        pool = self.work / "codes.csv"
        pool.write_text("".join(f"BENCH-{secrets.token_hex(6).upper()},,2030-12-31\n" for _ in range(codes)))
        self.rewards("codes", "import", SKU, str(pool))
        return key

    def setup(self) -> str:
        """The database migrated with the demo catalog, the budget large enough for every run; a new
        loyalty key of both offers' programs."""
        self.rewards("migrate")
        self.rewards("catalog", "apply", str(ROOT / "catalog" / "demo"))
        self.sql(
            "UPDATE programs SET monthly_budget_minor = 1000000000000000"
            " WHERE monthly_budget_minor IS NOT NULL"
        )
        return self.key("loyalty", "mobile-bonus", "home-internet")

    def key(self, role: str, *programs: str) -> str:
        options = [arg for program in programs for arg in ("--program", program)]
        return (
            self.rewards("keys", "create", "--role", role, *options, "--name", "bench")
            .strip()
            .splitlines()[-1]
        )

    def key_id(self) -> str:
        from bench._stack import current_key_id

        return current_key_id(self.env)

    def sql(self, statement: str) -> list:
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        for server in reversed(self.started):
            server.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def ceiling_script(bench: Bench, offer: str, round_: int = 0) -> Path:
    """The pgbench script of one redemption, built by the service's own code against this database,
    its subscribers those of pgbench round `round_`."""
    from bench.ceiling import Offer, redemption_script
    from service.catalog.snapshot import load_snapshot
    from service.kit.config import reset_settings_cache
    from service.kit.db.engine import new_session, reset_engine

    os.environ.update(DATABASE_URL=bench.env["DATABASE_URL"], ENCRYPTION_KEY=bench.env["ENCRYPTION_KEY"])
    reset_settings_cache()
    reset_engine()
    program, tariff, code, points = OFFERS[offer]
    api_key_id = bench.sql("SELECT max(id) FROM api_keys")[0][0]
    body = json.dumps(
        {
            "id": "01a23a86-2c12-7063-ad23-fdb92014da13",
            "offer": code,
            "locale": "ru",
            "msisdn": "+77050000001",
            "points": points,
            "reward": {
                "sku": "ARAY-CINEMA-2000",
                "kind": "code",
                "name": "Aray Cinema ticket 2 000 ₸",
                "last4": "0050",
                "nominal": {"amount": "2000.00", "currency": "KZT"},
                "partner": "aray-cinema",
                "expires_at": "2030-12-30T19:00:00Z",
            },
            "status": "accepted",
            "tariff": tariff,
            "program": program,
            "created_at": "2026-12-03T06:10:01.330041Z",
            "updated_at": "2026-12-03T06:10:01.330041Z",
            "external_id": "e1",
            "resend_count": 0,
            "status_reason": None,
        }
    )
    with new_session() as session:
        snap = load_snapshot(session)
    script = bench.work / f"redemption-{round_}.sql"
    script.write_text(
        redemption_script(
            snap,
            Offer(program, tariff, code, points),
            api_key_id=api_key_id,
            response_body=body,
            subscribers=ceiling_subscribers(round_),
        )
    )
    return script


@dataclass
class Measured:
    """One API run between two ceilings (with --limit): what redeem.py prints and bench/scale.py
    compares."""

    result: dict
    ceilings: list  # PgbenchResult of the runs that finished
    dry: list[str]  # which run ran dry, and how: no ratio then
    meter: CpuMeter


def start_api(bench: Bench, workers: int, api_root: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`rewards api` on a free port against the bench's database, ready; its process and base URL."""
    port = free_port()
    api_env = dict(bench.env)
    if api_root:
        api_env["PYTHONPATH"] = str(api_root.resolve())
    api = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--port", str(port), "--workers", str(workers)],
        env=api_env,
        cwd=api_root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
    except BaseException:
        api.terminate()
        api.wait(timeout=30)
        raise
    return api, base


def stop_api(api: subprocess.Popen) -> None:
    api.terminate()
    api.wait(timeout=30)


def measure(bench: Bench, args: argparse.Namespace, key: str) -> Measured:
    """The API run, with --limit between two pgbench runs of the same statements on the same
    database; the codes left are printed after each run, and a run that ran dry is named in `dry`.
    Each call is a round of its own (subscribers, external ids, Idempotency-Keys), and an API run
    whose 201s took fewer codes than they count (replays, empty work) is named in `dry` too."""
    from bench.ceiling import CeilingFailed, codes_left, run_pgbench

    round_ = bench.rounds
    bench.rounds += 1
    ceiling: list = []
    dry: list[str] = []

    def left() -> int:
        return codes_left(bench.env["DATABASE_URL"], SKU)

    def ceiling_run(name: str, script: Path) -> None:
        try:
            ceiling.append(
                run_pgbench(
                    bench.env["DATABASE_URL"], script, clients=args.clients, seconds=int(args.seconds)
                )
            )
        except CeilingFailed as failed:
            if not failed.empty:
                raise SystemExit(str(failed)) from None
            dry.append(f"pgbench {name}: a transaction took no code ({left()} codes left)")
            errors = [line for line in str(failed).splitlines() if "ERROR" in line or "DETAIL" in line]
            print(f"  pgbench {name} failed: {' | '.join(errors[:3])}")
        print(f"  codes left after pgbench {name}: {left()}")

    if args.limit:
        ceiling_run("before", ceiling_script(bench, args.offer, 2 * round_))
    before_api = left()
    api, base = start_api(bench, args.api_workers, args.api_root)
    try:
        meter = CpuMeter(api.pid, postmaster_pid(bench.env["DATABASE_URL"]))
        if args.driver == "wrk":
            result = run_wrk(
                base, key, args.clients, args.seconds, args.warmup, args.offer, bench.work, meter, round_
            )
        else:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--load-only",
                    base,
                    key,
                    "--clients",
                    str(args.clients),
                    "--seconds",
                    str(args.seconds),
                    "--warmup",
                    str(args.warmup),
                    "--offer",
                    args.offer,
                    "--round",
                    str(round_),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out)
    finally:
        stop_api(api)
    failed = sum(n for label, n in result["statuses"].items() if label != "201")
    remaining = left()
    print(f"  codes left after the API run: {remaining}")
    if failed and remaining == 0:
        dry.append(f"the API run: {failed} requests failed and the pool is empty")
    redeemed = result["statuses"].get("201", 0)
    if before_api - remaining < redeemed:
        dry.append(
            f"the API run: {redeemed} redemptions answered 201 but {before_api - remaining} codes"
            " were taken (replayed or empty work)"
        )
    if args.limit:
        ceiling_run("after", ceiling_script(bench, args.offer, 2 * round_ + 1))
    return Measured(result, ceiling, dry, meter)


def report(args: argparse.Namespace, measured: Measured) -> str:
    """Prints the run's figures; returns its ratio line (or `no ratio: ...`) with --limit."""
    from bench.ceiling import ratio_line

    result, ceiling = measured.result, measured.ceilings
    print(
        f"{args.driver} driver, {args.offer} offer, {args.clients} clients,"
        f" {args.api_workers} API worker(s), {result['seconds']:.0f} s measured"
        f" after {args.warmup:.0f} s warm-up"
    )
    print(f"  redemptions/s: {result['rps']:.0f}   statuses: {result['statuses']}")
    if measured.meter.spent:
        print(measured.meter.report(result["statuses"]["201"]))
    print(
        f"  latency ms: p50 {result['p50_ms']:.1f}  p95 {result['p95_ms']:.1f}"
        f"  p99 {result['p99_ms']:.1f}  mean {result['mean_ms']:.1f}"
    )
    if not args.limit:
        return ""
    print(
        f"  pgbench, same database, the statements of one redemption, {args.clients} clients:"
        f" {' / '.join(f'{c.tps:.0f}' for c in ceiling)} tps (before / after of the runs that"
        f" finished; failed: {sum(c.failed for c in ceiling)})"
    )
    return ratio_line(result["rps"], ceiling, measured.dry)


def main() -> None:
    args = parse_args()
    if args.load_only:
        result = asyncio.run(
            load(
                args.load_only[0],
                args.load_only[1],
                args.clients,
                args.seconds,
                args.warmup,
                args.offer,
                args.round,
            )
        )
        print(json.dumps(result))
        return
    bench = Bench(args)
    try:
        from bench.ceiling import pool_size

        # the API run, and with --limit two pgbench runs of as many seconds
        seconds = args.warmup + args.seconds + (2 * int(args.seconds) if args.limit else 0)
        key = bench.prepare(args.pool or pool_size(args.clients, seconds) + args.codes)
        measured = measure(bench, args, key)
        line = report(args, measured)
        if args.limit:
            print(line)
            if measured.dry:
                sys.exit(1)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
