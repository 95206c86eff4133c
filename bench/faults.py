"""The fault matrix: redemptions at a steady rate while PostgreSQL, Redis, the SMSC, the HTTP gateway
and the service's own processes fail one after another; then the invariants are checked from the
database and the SMS providers' records, and one table is printed, ending with `lost 0, doubled 0`
when they all hold.

The service runs as in production, each part its own process: `rewards api` (2 uvicorn processes),
`rewards worker --no-relay` (reward-SMS and webhook Dramatiq processes), `rewards relay`, the test
SMSC (`rewards smsc`, receipts a second after the submit) and a loopback HTTP gateway
(tests/harness/sms_gateway.py). The load generator is the operator's loyalty system: one Idempotency-Key
per redemption, the same key and body again, with backoff, on 5xx, timeouts and connection errors.

    .venv/bin/python bench/faults.py                        # every fault, embedded PostgreSQL and Redis
    .venv/bin/python bench/faults.py --system               # the machine's PostgreSQL 15 and Redis
    .venv/bin/python bench/faults.py --faults "postgres SIGKILL,redis restarted empty"
    .venv/bin/python bench/faults.py --minutes 20           # soak: faults at random moments
    .venv/bin/python bench/faults.py --faults "serve: worker SIGKILL,serve: postgres SIGKILL"  # serve rows

The `serve: ...` rows run after the others on a stack of their own: `rewards serve` on the embedded
default (its own PostgreSQL and Redis, SMS to the test SMSC), with nobody restarting anything; each
shows the seconds from a SIGKILL to the first redemption served end to end (201 and its SMS) against
its target (worker 5 s, PostgreSQL 15 s, Redis 10 s), and lost/doubled by the same final check.

--system uses DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test_faults, dropped and
created again in a tablespace of its own) and REDIS_URL (default redis://127.0.0.1:6379/11), stops and
kills the machine's PostgreSQL cluster and Redis server (every database on them feels it), and
leaves both running when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.faults import FAULTS, PhaseResult, run_phase, switch_provider  # noqa: E402
from tests.harness.loyalty import LoyaltySystem, ReadinessProbe  # noqa: E402
from tests.harness.serve import SERVE_FAULTS, run_serve_fault, serve_stack, serve_table  # noqa: E402
from tests.harness.stack import log, stack  # noqa: E402
from tests.harness.verdict import check, notes, table, wait_settled  # noqa: E402

SOAK_FAULTS = [name for name, (_, provider) in FAULTS.items() if provider == "smpp" and name != "baseline"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--system", action="store_true", help="the machine's PostgreSQL and Redis")
    parser.add_argument("--rate", type=float, default=100, help="redemptions per second")
    parser.add_argument("--faults", default="all", help="comma-separated names (see the table) or 'all'")
    parser.add_argument("--minutes", type=float, default=0, help="soak: this long, faults at random moments")
    parser.add_argument("--seed", type=int, default=None, help="of the soak's random faults")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, records)")
    parser.add_argument("--serve-rate", type=float, default=20, help="redemptions per second, serve rows")
    parser.add_argument(
        "--serve-processes", type=int, default=2, help="rewards serve --processes (serve rows)"
    )
    args = parser.parse_args()

    names = (
        list(FAULTS) + list(SERVE_FAULTS)
        if args.faults == "all"
        else [n.strip() for n in args.faults.split(",")]
    )
    unknown = [n for n in names if n not in FAULTS and n not in SERVE_FAULTS]
    if unknown:
        raise SystemExit(f"unknown faults {unknown}; known: {list(FAULTS) + list(SERVE_FAULTS)}")
    serve_names = [n for n in names if n in SERVE_FAULTS and not (args.minutes and args.faults == "all")]
    names = [n for n in names if n in FAULTS]
    if not names and not args.minutes:  # only rows under `rewards serve`
        sys.exit(0 if serve_matrix(serve_names, args) else 1)
    names.sort(key=lambda n: FAULTS[n][1] == "http")  # SMPP first, then the gateway's workers
    seconds = args.minutes * 60 if args.minutes else 75 * len(names) + 120
    codes = int(args.rate * seconds * 1.3) + 5000
    started = time.monotonic()
    log(
        f"stack: {'system PostgreSQL and Redis' if args.system else 'embedded PostgreSQL and Redis'};"
        f" {args.rate:.0f} redemptions/s; {codes} codes"
    )
    with stack(system=args.system, codes=codes, keep=args.keep) as st:
        load = LoyaltySystem(st.base, st.key, args.rate).start()
        probe = ReadinessProbe(st.base).start()
        time.sleep(5)
        results: list[PhaseResult] = []
        provider = "smpp"
        if args.minutes:
            rng = random.Random(args.seed)
            end = time.monotonic() + args.minutes * 60
            i = 0
            while time.monotonic() < end:
                i += 1
                name = rng.choice(SOAK_FAULTS)
                results.append(
                    run_phase(st, load, probe, name, label=f"{i}. {name}", settle=rng.uniform(5, 40))
                )
        else:
            for name in names:
                if FAULTS[name][1] != provider:
                    provider = FAULTS[name][1]
                    switch_provider(st, load, provider)
                results.append(run_phase(st, load, probe, name))
        load.phase = "after the last fault"
        time.sleep(5)
        log("stopping the load; waiting for every open request and every SMS")
        load.stop()
        probe.stop()
        waiting = wait_settled(st)
        verdict = check(st, load.ops)
        print()
        print(
            f"## {'system' if args.system else 'embedded'} stack: {args.rate:.0f} redemptions/s,"
            f" {len(load.ops)} redemptions, {(time.monotonic() - started) / 60:.1f} min"
        )
        print()
        print(table(results, load.ops, verdict, load.answers))
        print()
        print(notes(results))
        print()
        for line in verdict.lines:
            print(f"- {line}")
        if waiting:
            print(f"- still on their way when the check ran: {waiting}")
        print(
            f"- slowest attempt seen by the client: {load.max_attempt_seconds:.1f} s (its timeout: 10 s);"
            f" {len(load.slow)} attempts over 2 s, the slowest {sorted(load.slow, reverse=True)[:5]};"
            f" the longest wait for a free client connection {load.max_queued:.1f} s"
        )
        print()
        print(f"lost {verdict.total_lost}, doubled {verdict.total_doubled}")
    held = verdict.total_lost == verdict.total_doubled == 0
    if serve_names:
        held = serve_matrix(serve_names, args) and held
    sys.exit(0 if held else 1)


def serve_matrix(names: list[str], args: argparse.Namespace) -> bool:
    """The rows under `rewards serve`: its own stack, the load, one SIGKILL after another, the final
    check; prints the table and its verdict lines, returns whether everything held."""
    started = time.monotonic()
    codes = int(args.serve_rate * (45 * len(names) + 60) * 1.3) + 2000
    log(f"rewards serve on the embedded default; {args.serve_rate:.0f} redemptions/s; {codes} codes")
    with serve_stack(codes=codes, processes=args.serve_processes) as st:
        load = LoyaltySystem(st.base, st.key, args.serve_rate).start()
        time.sleep(5)
        results = [run_serve_fault(st, load, name) for name in names]
        load.phase = "after the last fault"
        time.sleep(3)
        log("stopping the load; waiting for every open request and every SMS")
        load.stop()
        waiting = wait_settled(st, 300)
        verdict = check(st, load.ops)
        print()
        print(
            f"## rewards serve --processes {args.serve_processes} (embedded):"
            f" {args.serve_rate:.0f} redemptions/s, {len(load.ops)} redemptions,"
            f" {(time.monotonic() - started) / 60:.1f} min"
        )
        print()
        print(serve_table(results, verdict.lost, verdict.doubled))
        print()
        for r in results:
            print(f"- {r.name}: {r.window.note}")
        print()
        for line in verdict.lines:
            print(f"- {line}")
        if waiting:
            print(f"- still on their way when the check ran: {waiting}")
        missed = [r.name for r in results if not r.within_target]
        print()
        figures = [
            f"{r.name.removeprefix('serve: ')} {'-' if r.recovery is None else f'{r.recovery:.1f}'} s"
            f" (≤ {r.target:.0f})"
            for r in results
        ]
        verdict_line = f"; NOT within target: {missed}" if missed else "; all within target"
        print("serve recovery: " + ", ".join(figures) + verdict_line)
        print(f"lost {verdict.total_lost}, doubled {verdict.total_doubled}")
    return verdict.total_lost == verdict.total_doubled == 0 and not missed and not waiting


if __name__ == "__main__":
    main()
