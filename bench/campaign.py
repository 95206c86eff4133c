"""A campaign of N lines at no rate cap while on-demand redemptions arrive at 50/s (issue 27, "Scale and
speed"), on the fault harness's stack (tests/harness/stack.py: embedded PostgreSQL and Redis unless
--system, `rewards api`, the relay, `rewards worker` with the `campaigns` and `sms_bulk` queues in its
webhook group, SMPP to the test SMSC, which records every message with CLOCK_MONOTONIC times).

It prints:
- the validation time: the N-line CSV uploaded through `PUT /v1/campaigns/{id}/lines` until the
  report is answered, and the peak RSS of the API's processes meanwhile (sampled every 50 ms);
- pgbench's ceiling for the redemption's statements (bench/ceiling.py), measured before the campaign
  on the same database;
- the campaign's lines/s, from its approval to `done`;
- the on-demand redemptions' p99 (request to 201, from the load generator) and the reward SMS' p95
  from the 201 to the first `submit_sm` at the SMSC, during the campaign only.

The program's quiet hours are switched off (`quiet_hours = NULL`) so that the campaign's bulk SMS go
out whatever the bench's clock says: the bulk channel then competes with the reward SMS, as it does
by day. Every line must have become exactly one redemption of the campaign, counted in the
database; the bench fails otherwise.

    flock /tmp/bench.lock .venv/bin/python bench/campaign.py --lines 20000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench.ceiling import CeilingFailed, pool_size, run_pgbench  # noqa: E402
from bench.delivery import percentile  # noqa: E402
from bench.redeem import ceiling_script  # noqa: E402
from tests.harness.loyalty import LoyaltySystem  # noqa: E402
from tests.harness.stack import OFFER, PROGRAM, TARIFF, Stack, stack  # noqa: E402

CEILING_CLIENTS, CEILING_SECONDS = 8, 10
# Per line 2 000 KZT: a budget no campaign of this bench reaches (the stack's is 1e9 KZT).
BUDGET_MINOR = 10**15


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=50, help="on-demand redemptions per second")
    parser.add_argument(
        "--min-lines-per-second",
        type=float,
        default=20,
        help="codes are imported for on-demand load lasting N / this many seconds",
    )
    parser.add_argument(
        "--validate-only",
        action="store_true",
        help="only the upload and its validation (no ceiling, no campaign, no load): a partial run",
    )
    parser.add_argument(
        "--cost-runs",
        type=int,
        default=3,
        help="after the campaign, pairs of ratio runs and lookup rounds on its database and on a fresh"
        " one beside it (0: none)",
    )
    parser.add_argument("--system", action="store_true", help="the machine's DATABASE_URL/REDIS_URL")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def write_file(path: Path, lines: int) -> Path:
    with path.open("w") as fh:
        fh.write("phone,offer,ref\n")
        for n in range(lines):
            fh.write(f"+7701{n:07d},,r{n}\n")
    return path


def new_campaign(st: Stack, lines: int) -> str:
    """A draft of the stack's offer, at no rate cap."""
    created = httpx.post(
        f"{st.base}/v1/campaigns",
        json={"program": PROGRAM, "tariff": TARIFF, "offer": OFFER, "name": f"bench {lines}"},
        headers={"Authorization": f"Bearer {st.key}"},
        timeout=30,
    )
    created.raise_for_status()
    return created.json()["id"]


def smsc_received(st: Stack) -> list[dict]:
    """Every message the test SMSC recorded (complete lines of its JSONL record)."""
    text = st.smsc_record.read_text() if st.smsc_record.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def api_rss(st: Stack) -> dict[int, int]:
    """Bytes resident in each of the API's processes (uvicorn's supervisor and its workers)."""
    found: dict[int, int] = {}
    try:
        main = psutil.Process(st.service("api").pid)
        for proc in [main, *main.children(recursive=True)]:
            try:
                found[proc.pid] = proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return found


@dataclass
class Validation:
    seconds: float
    before: dict[int, int]  # RSS per API process before the upload
    peak: dict[int, int]  # the most RSS per API process during it
    answer: dict

    def __str__(self) -> str:
        grown = max(self.peak, key=lambda pid: self.peak[pid] - self.before.get(pid, 0))
        return (
            f"API peak RSS {sum(self.peak.values()) / 2**20:.0f} MB in all its processes"
            f" ({sum(self.before.values()) / 2**20:.0f} MB before the upload); the process that grew most:"
            f" {self.before.get(grown, 0) / 2**20:.0f} -> {self.peak[grown] / 2**20:.0f} MB"
        )


def validate(st: Stack, key: str, campaign_id: str, path: Path) -> Validation:
    """The upload through the API: seconds, the API's RSS before and at its peak, and the answer."""
    before = api_rss(st)
    peak, done = dict(before), threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid, rss in api_rss(st).items():
                peak[pid] = max(peak.get(pid, 0), rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with path.open("rb") as fh:
        response = httpx.put(
            f"{st.base}/v1/campaigns/{campaign_id}/lines",
            content=fh,
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "text/csv",
                "Content-Disposition": 'attachment; filename="lines.csv"',
            },
            timeout=1800,
        )
    took = time.monotonic() - started
    done.set()
    sampler.join()
    if response.status_code != 200:
        raise SystemExit(f"upload refused: {response.status_code} {response.text[:1000]}")
    return Validation(took, before, peak, response.json())


def main() -> int:
    args = parse_args()
    n = args.lines
    on_demand = 0 if args.validate_only else int(args.rate * (n / args.min_lines_per_second + 120))
    codes = n + on_demand + (0 if args.validate_only else pool_size(CEILING_CLIENTS, CEILING_SECONDS))
    print(f"preparing: {codes} codes ({n} for the campaign, {on_demand} on demand, the rest for pgbench)")
    # the database on the data directory's disk (the fault tests' tmpfs would hold it in memory)
    with stack(system=args.system, codes=codes, keep=args.keep, tablespace_mb=0) as st:
        st.sql(
            "UPDATE programs SET quiet_hours = NULL, monthly_budget_minor = %s WHERE code = %s",
            (BUDGET_MINOR, PROGRAM),
        )
        # a new catalog revision: every process reloads its snapshot (the budget is in it)
        st.sql(
            "INSERT INTO catalog_revisions (digest, source, summary)"
            " VALUES ('bench', 'bench/campaign.py', '{}')"
        )
        st.sql("ANALYZE")
        approver = st.approver_key("bench-approver@example.kz", "bench-approver")
        auth = {"Authorization": f"Bearer {st.key}"}

        if args.validate_only:
            checked = validate(st, st.key, new_campaign(st, n), write_file(st.work / "lines.csv", n))
            print(
                f"validation only: {n} lines in {checked.seconds:.1f} s, {n / checked.seconds:.0f} lines/s;"
                f" {checked}; {checked.answer.get('report', {}).get('problems')} problems; no campaign run"
            )
            return 0
        # 1) pgbench's ceiling for a redemption, on this database, before anything else runs
        script = ceiling_script(st, "unbudgeted")  # type: ignore[arg-type]  # Stack has env, sql, work
        try:
            ceiling = run_pgbench(
                st.env["DATABASE_URL"], script, clients=CEILING_CLIENTS, seconds=CEILING_SECONDS
            )
        except CeilingFailed as failed:
            raise SystemExit(f"no ceiling: {failed}") from None
        print(
            f"pgbench ceiling: {ceiling.tps:.0f} redemptions/s"
            f" ({CEILING_CLIENTS} clients, {CEILING_SECONDS} s)"
        )

        # 2) validation: the file through the API
        path = write_file(st.work / "lines.csv", n)
        campaign_id = new_campaign(st, n)
        checked = validate(st, st.key, campaign_id, path)
        report = checked.answer.get("report", {})
        print(
            f"validation: {n} lines ({path.stat().st_size / 1e6:.1f} MB) in {checked.seconds:.1f} s,"
            f" {n / checked.seconds:.0f} lines/s; {checked}; {report.get('problems')} problems"
        )
        if report.get("problems"):
            raise SystemExit(f"the file has problems: {report}")

        # 3) on-demand load, then the campaign submitted and approved
        load = LoyaltySystem(st.base, st.key, args.rate).start()
        time.sleep(5)  # warm-up: connections, snapshots
        load.phase = "campaign"
        submitted = httpx.post(f"{st.base}/v1/campaigns/{campaign_id}/submit", headers=auth, timeout=60)
        submitted.raise_for_status()
        started = time.monotonic()
        approved = httpx.post(
            f"{st.base}/v1/campaigns/{campaign_id}/approve",
            headers={"Authorization": f"Bearer {approver}"},
            timeout=60,
        )
        if approved.status_code != 200:
            raise SystemExit(f"approval refused: {approved.status_code} {approved.text[:1000]}")
        last_report, status = started, "approved"
        stalled_at = pressure()
        vacuumed: set[str] = set()  # what autovacuum/analyze worked on during the report's window
        while True:
            time.sleep(1)
            status, working = st.sql(
                "SELECT (SELECT status FROM campaigns WHERE id = %s),"
                " (SELECT string_agg(DISTINCT regexp_replace(query, '^autovacuum: ', ''), '|')"
                "    FROM pg_stat_activity WHERE backend_type = 'autovacuum worker')",
                (campaign_id,),
            )[0]
            vacuumed.update(filter(None, (working or "").split("|")))
            if status not in ("approved", "running"):
                break
            if time.monotonic() - last_report > 30:
                # counted only for the report: a count of a million lines every second would be
                # the bench's own load on the database it measures
                done_lines = st.sql(
                    "SELECT count(*) FROM campaign_lines WHERE campaign_id = %s AND status <> 'pending'",
                    (campaign_id,),
                )[0][0]
                window_start, last_report = last_report, time.monotonic()
                elapsed = last_report - started
                window = [
                    op.seconds
                    for op in list(load.ops)
                    if op.seconds is not None and op.answered_at is not None and op.answered_at > window_start
                ]
                p99_window = f"{percentile(window, 0.99) * 1000:.0f} ms" if window else "-"
                stalls = pressure()
                waited = {
                    what: (stalls[what] - stalled_at[what]) / 1e6 / (last_report - window_start) * 100
                    for what in stalls
                    if what in stalled_at
                }
                stalled_at = stalls
                print(
                    f"  {elapsed:.0f} s: {done_lines} lines, {done_lines / elapsed:.0f} lines/s;"
                    f" on-demand p99 of the window {p99_window};"
                    f" waiting for CPU {waited.get('cpu', 0):.0f} %, for I/O {waited.get('io', 0):.0f} %"
                    f" of the time; autovacuum: {', '.join(sorted(vacuumed)) or 'none'}",
                    flush=True,
                )
                vacuumed.clear()
        campaign_s = time.monotonic() - started
        load.phase = "after"
        load.stop()
        lines_per_s = n / campaign_s

        # 4) every line exactly one redemption of the campaign
        lines_done, lines_linked, redemptions, distinct = st.sql(
            "SELECT (SELECT count(*) FROM campaign_lines WHERE campaign_id = %(c)s AND status = 'done'),"
            " (SELECT count(DISTINCT redemption_id) FROM campaign_lines WHERE campaign_id = %(c)s),"
            " (SELECT count(*) FROM redemptions WHERE campaign_id = %(c)s),"
            " (SELECT count(DISTINCT external_id) FROM redemptions WHERE campaign_id = %(c)s)",
            {"c": campaign_id},
        )[0]
        print(
            f"campaign: status {status}; {lines_done} lines done, {lines_linked} distinct redemptions linked,"
            f" {redemptions} redemptions of the campaign ({distinct} distinct keys);"
            f" {lines_per_s:.0f} lines/s = {lines_per_s / ceiling.tps:.2f} of pgbench's ceiling"
        )
        counted = status == "done" and lines_done == lines_linked == redemptions == distinct == n

        # 5) on-demand latency and reward SMS, for the redemptions sent while the campaign ran
        during = [op for op in load.ops if op.phase == "campaign"]
        ok_ops = [op for op in during if op.final == 201 and op.seconds is not None]
        refused = len(during) - len(ok_ops)
        latencies = [op.seconds for op in ok_ops if op.seconds is not None]
        p99 = percentile(latencies, 0.99) * 1000 if latencies else float("inf")
        answered_at = {op.msisdn: op.answered_at for op in ok_ops if op.answered_at is not None}
        deadline = time.monotonic() + 60
        while True:
            first_part: dict[str, float] = {}
            for message in smsc_received(st):
                if message["to"] in answered_at:
                    first_part.setdefault(message["to"], message["first_part_at"])
            if len(first_part) >= len(answered_at) or time.monotonic() > deadline:
                break
            time.sleep(1)
        waits = [first_part[to] - at for to, at in answered_at.items() if to in first_part]
        missing = len(answered_at) - len(waits)
        sms_p95 = percentile(waits, 0.95) * 1000 if waits and not missing else float("inf")
        print(
            f"on demand: {len(during)} redemptions at {args.rate:.0f}/s during the campaign,"
            f" {refused} not 201;"
            f" p50 {percentile(latencies, 0.5) * 1000:.0f} ms, p99 {p99:.0f} ms,"
            f" max {max(latencies, default=0) * 1000:.0f} ms"
        )
        if waits:
            print(
                f"reward SMS, 201 -> first submit_sm: {len(waits)} at the SMSC, {missing} missing;"
                f" p50 {percentile(waits, 0.5) * 1000:.0f} ms, p95 {percentile(waits, 0.95) * 1000:.0f} ms,"
                f" max {max(waits) * 1000:.0f} ms"
            )
        bulk = sum(1 for m in smsc_received(st) if m["to"].startswith("+7701"))
        print(f"campaign SMS at the SMSC by the end: {bulk} of {n}")
        good = counted and not refused and p99 < 100 and sms_p95 < 1000
        if not counted:
            print("FAILED: not every line became exactly one redemption of the campaign")
        flat = cost_after_campaign(st, args.cost_runs) if args.cost_runs else True
        print(
            f"campaign {n} lines in {campaign_s:.0f} s, {lines_per_s:.0f} lines/s;"
            f" on-demand p99 {p99:.0f} ms;"
            f" reward SMS p95 {sms_p95:.0f} ms; {'ok' if good else 'FAIL'}"
        )
        return 0 if good and flat else 1


def pressure() -> dict[str, int]:
    """The kernel's stall counters (PSI, /proc/pressure): microseconds in which some task waited for
    a CPU, or for I/O; empty where the kernel has none."""
    totals = {}
    for what in ("cpu", "io"):
        try:
            first = Path(f"/proc/pressure/{what}").read_text().splitlines()[0]
        except OSError:
            continue
        totals[what] = int(first.rsplit("total=", 1)[1])
    return totals


def cost_after_campaign(st: Stack, runs: int) -> bool:
    """Cost stays flat as the data grows (issue 27): the campaign's database beside a fresh one in the
    same PostgreSQL, measured as bench/scale.py measures its grown database (its phases(): `runs` pairs
    of bench/redeem.py --limit runs, then of subscriber lookup rounds, one on each database back to
    back, and each database's export of the month), and the campaign's own month exported. The stack's
    API, relay and workers stop first: the campaign's bulk SMS, which trail its lines by hours at the
    bulk rate, would share the two cores with the runs. True when the ratio's quotient is at least
    0.9, the lookup p99's at most 1.1 and the export's rows/s at least 0.9 of the fresh one's."""
    import os

    from bench import scale
    from bench._stack import available_codes_sql
    from bench.redeem import Bench

    st.supervisor.stop()
    print(
        "cost after the campaign: its database (the stack stopped; the bulk SMS not sent yet stay unsent)"
        " and a fresh one beside it, a run of each in turn:",
        flush=True,
    )
    args = argparse.Namespace(
        clients=16, seconds=10, warmup=3, api_workers=2, runs=runs, lookups=2000,
        offer="budgeted", limit=True, api_root=None, driver="wrk" if shutil.which("wrk") else "python",
    )  # fmt: skip
    # Bench takes its servers from the environment when it names them (it then starts and stops none)
    os.environ.update({name: st.env[name] for name in ("DATABASE_URL", "REDIS_URL", "ENCRYPTION_KEY")})
    grown = Bench(args)
    try:
        benches, keys, support = scale.side_by_side(grown, "campaign_fresh")
        per_database = runs * pool_size(args.clients, args.warmup + 3 * args.seconds) + scale.ROOM
        for bench in benches.values():
            bench.sql(available_codes_sql(*scale.ratio_product(bench), per_database, key_id=bench.key_id()))
            bench.sql("VACUUM ANALYZE")
        period = scale.this_month(grown)
        for which, bench in benches.items():
            print(f"  {which} database: {scale.table_rows(bench)}")
        try:
            measured = scale.phases(args, benches, keys, support, period)
            records, per_second, net = scale.export(grown, period, PROGRAM)
        except SystemExit as refused:  # a run that ran dry, a lookup or export without its rows
            print(f"cost after the campaign: no figure: {refused}; FAIL", flush=True)
            return False
        print(
            f"  grown: export of {PROGRAM} {period}, the campaign's month (CSV): {records:,} rows,"
            f" {per_second:,.0f} rows/s ({net:,.0f} rows/s beyond the fixed cost)"
        )
    finally:
        grown.sql("DROP DATABASE IF EXISTS campaign_fresh WITH (FORCE)")
        grown.close()
    exported = measured.after.export_rows_per_s / measured.before.export_rows_per_s
    flat = measured.ratio >= 0.9 and measured.lookup_p99 <= 1.1 and exported >= 0.9
    print(
        f"cost after the campaign: ratio after/fresh {measured.ratio:.2f}; lookup p99 after/fresh"
        f" {measured.lookup_p99:.2f}; export rows/s after/fresh {exported:.2f}; {'ok' if flat else 'FAIL'}",
        flush=True,
    )
    return flat


if __name__ == "__main__":
    sys.exit(main())
