"""SMS throughput through the workers to the test SMSC, and latency from a redemption's 201 to its
first submit_sm, on the embedded default (PostgreSQL, Redis, `rewards api`, `rewards worker` with
the outbox relay, SMPP to `rewards smsc` in a process of its own, which records every message it
receives with CLOCK_MONOTONIC times, comparable across processes on one machine).

It also prints the CPU seconds each component used per SMS in the throughput phase (from
/proc, via psutil), which says who the bottleneck is on this machine.

    .venv/bin/python bench/delivery.py                     # 100 redemptions/s for 20 s, then a 10,000 backlog
    .venv/bin/python bench/delivery.py --rate 200 --backlog 20000 --threads 16
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.stack import wait_ready  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def paced_load(
    base: str, key: str, rate: float, seconds: float, prefix: str = "bd"
) -> dict[str, float]:
    """POSTs at a fixed rate; returns destination -> monotonic time of its 201."""
    import httpx

    answered: dict[str, float] = {}
    failures = 0
    async with httpx.AsyncClient(
        base_url=base, timeout=30, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64)
    ) as http:

        async def one(n: int) -> None:
            nonlocal failures
            msisdn = f"87{47 if prefix == 'bd' else '05'}{n:07d}"
            try:
                response = await http.post(
                    "/v1/redemptions",
                    json={
                        "program": "home-internet",
                        "tariff": "home-100",
                        "offer": "cinema-2000",
                        "points": 2200,
                        "msisdn": msisdn,
                        "external_id": f"{prefix}-{n}",
                    },
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"{prefix}-{n}"},
                )
            except httpx.HTTPError as exc:
                failures += 1
                print(f"  request error: {type(exc).__name__}")
                return
            if response.status_code == 201:
                answered["+7" + msisdn[1:]] = time.monotonic()
            else:
                failures += 1
                if failures == 1:
                    print(f"  first refusal: {response.status_code} {response.text[:300]}")

        tasks, start, n = [], time.monotonic(), 0
        while time.monotonic() - start < seconds:
            due = start + n / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            tasks.append(asyncio.create_task(one(n)))
            n += 1
        await asyncio.gather(*tasks)
    if failures:
        print(f"  {failures} redemptions were refused")
    return answered


RECEIVER = """
import asyncio, sys

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\\r\\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 204 No Content\\r\\n\\r\\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=512)
    await server.serve_forever()

asyncio.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100, help="redemptions per second in the latency phase")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--backlog", type=int, default=10000, help="SMS queued at once in the throughput phase"
    )
    parser.add_argument("--receipt-delay", type=float, default=1.0, help="seconds from submit to receipt")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    from service.kit.embedded import EmbeddedPostgres, EmbeddedRedis

    work = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    pg, rd = EmbeddedPostgres(work / "pg"), EmbeddedRedis(work / "redis")
    # Receipts come back a second after the submit, as from a handset; an SMSC that answers in the same
    # millisecond makes most receipts overtake their own "sent" commit and be offered twice.
    smsc_port, record = free_port(), work / "smsc.jsonl"
    smsc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "smsc",
            "--port",
            str(smsc_port),
            "--receipt-delay",
            str(args.receipt_delay),
            "--record",
            str(record),
        ],
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    received: list[dict] = []
    record_offset = 0

    def smsc_received() -> list[dict]:
        nonlocal record_offset
        if record.exists():
            with record.open() as fh:
                fh.seek(record_offset)
                for line in fh:
                    if not line.endswith("\n"):
                        break
                    received.append(json.loads(line))
                    record_offset += len(line.encode())
        return received

    env = {
        **os.environ,
        "DATABASE_URL": pg.start(),
        "REDIS_URL": rd.start(),
        "LOG_LEVEL": "WARNING",
        "ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "SMS_PROVIDER": "smpp",
        "SMPP_HOST": "127.0.0.1",
        "SMPP_PORT": str(smsc_port),
        "SMPP_SYSTEM_ID": "rewards",
        "SMS_RATE_LIMIT": "5000",
    }
    procs: list[subprocess.Popen] = []

    def rewards(*cli: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *cli], env=env, check=True, capture_output=True, text=True
        ).stdout

    def worker(*extra: str, command: str = "worker") -> subprocess.Popen:
        log = open(os.environ.get("BENCH_WORKER_LOG", os.devnull), "ab")
        cli = (
            [command, "--processes", str(args.processes), "--threads", str(args.threads)]
            if command == "worker"
            else [command]
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *cli, *extra],
            env={**env, **({"LOG_LEVEL": "INFO"} if "BENCH_WORKER_LOG" in os.environ else {})},
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    # The loyalty system's webhook endpoint, in a process of its own: a minimal keep-alive HTTP/1.1
    # server that answers 204, so that the stand-in for the operator costs this machine little.
    hooks_port = free_port()
    hooks = subprocess.Popen([sys.executable, "-c", RECEIVER, str(hooks_port)], start_new_session=True)
    try:
        rewards("migrate")
        rewards("catalog", "apply", str(ROOT / "catalog" / "demo"))
        import psycopg

        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("UPDATE programs SET webhook_url = %s", (f"http://127.0.0.1:{hooks_port}/hooks",))
        codes = work / "codes.csv"
        need = int(args.rate * args.seconds) + args.backlog + 100
        codes.write_text("".join(f"BD-{secrets.token_hex(6).upper()}\n" for _ in range(need)))
        rewards("codes", "import", "ARAY-CINEMA-2000", str(codes))
        key = (
            rewards("keys", "create", "--role", "loyalty", "--program", "home-internet", "--name", "bench")
            .strip()
            .splitlines()[-1]
        )
        port = free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "service.cli", "api", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        first = worker()
        wait_ready(f"http://127.0.0.1:{port}")
        # warm-up: every process bound, the catalog snapshots loaded, the first connections opened
        asyncio.run(paced_load(f"http://127.0.0.1:{port}", key, 20, 1.0, prefix="warm"))
        deadline = time.monotonic() + 60
        while len(smsc_received()) < 20:
            if time.monotonic() > deadline:
                raise SystemExit("the warm-up SMS did not reach the SMSC in 60 s")
            time.sleep(0.1)
        time.sleep(2)
        warm = len(smsc_received())

        # 1) latency at a fixed redemption rate (--seconds 0 skips it)
        if args.seconds > 0:
            answered = asyncio.run(paced_load(f"http://127.0.0.1:{port}", key, args.rate, args.seconds))
            deadline = time.monotonic() + 60
            while len(smsc_received()) < warm + len(answered) and time.monotonic() < deadline:
                time.sleep(0.1)
            first_part = {m["to"]: m["first_part_at"] for m in smsc_received()}
            first_part_unix = {m["to"]: m["first_part_unix"] for m in smsc_received()}
            latencies = [first_part[to] - t for to, t in answered.items() if to in first_part]
            with psycopg.connect(env["DATABASE_URL"]) as conn:
                # created_at is taken as the redemption starts, before its commit and its 201: from it the
                # latency is an upper bound of 201 -> submit_sm, read on the servers' own clocks
                committed = dict(
                    conn.execute(
                        "SELECT msisdn, extract(epoch FROM created_at)::float8 FROM redemptions"
                        " WHERE external_id LIKE 'bd-%'"
                    ).fetchall()
                )
            server = [first_part_unix[to] - t for to, t in committed.items() if to in first_part_unix]
            print(
                f"latency phase: {len(answered)} redemptions at {args.rate:.0f}/s for {args.seconds:.0f} s, "
                f"{len(latencies)} SMS at the SMSC"
            )
            for label, values in (
                ("redemption created (before its commit and 201) -> submit_sm", server),
                ("201 seen by the load generator -> submit_sm", latencies),
            ):
                print(
                    f"  {label}, ms: p50 {percentile(values, 0.5) * 1000:.0f}"
                    f"  p95 {percentile(values, 0.95) * 1000:.0f}"
                    f"  p99 {percentile(values, 0.99) * 1000:.0f}  max {max(values) * 1000:.0f}"
                )
            print(
                "  (the first is an upper bound of 201 -> submit_sm; the load generator shares the 2 cores"
                " and"
                " may read a 201 after the SMS has already gone out, so the second can be negative)"
            )

        # 2) throughput: a backlog written while no worker runs, then drained
        os.killpg(first.pid, 15)
        first.wait(timeout=30)
        before = len(smsc_received())
        script = (
            "from datetime import datetime, timezone\n"
            "from service.kit.db.engine import transaction\n"
            "from service.redemptions.schemas import RedemptionIn\n"
            "from service.redemptions.service import Scope, redeem\n"
            "now = datetime.now(timezone.utc)\n"
            f"for chunk in range(0, {args.backlog}, 500):\n"
            "    with transaction() as s:\n"
            f"        for i in range(chunk, min(chunk + 500, {args.backlog})):\n"
            "            redeem(s, RedemptionIn(program='home-internet', tariff='home-100',"
            " offer='cinema-2000',"
            " points=2200, msisdn=f'8776{i:07d}', external_id=f'backlog-{i}'), scope=Scope(None),"
            " api_key_id=None, now=now)\n"
        )
        subprocess.run([sys.executable, "-c", script], env=env, check=True)
        # A database in service has statistics; this one was created a minute ago, and without them
        # the planner takes a table of 10,000 rows for an empty one.
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("ANALYZE")
        import psutil

        classified: dict[int, tuple[psutil.Process, str | None]] = {}

        def classify(proc: psutil.Process) -> str | None:
            cmd = " ".join(proc.cmdline() or [])
            if proc.pid == hooks.pid:
                return "webhook receiver"
            if proc.pid == os.getpid():
                return "bench (reads the SMSC record, measures)"
            return (
                "sms workers"
                if "dramatiq" in cmd and "sms_transactional" in cmd
                else "webhook workers"
                if "dramatiq" in cmd
                else "relay"
                if " worker " in cmd + " " or cmd.endswith(" relay")
                else "smsc"
                if " smsc " in cmd
                else "api"
                if " api " in cmd + " "
                else "postgres"
                if "postgres" in cmd and str(work) in cmd
                else "postgres"
                if proc.name().startswith("postgres")
                else "redis"
                if "redis-server" in cmd
                else "py-spy"
                if "py-spy" in cmd
                else None
            )

        def component_cpu() -> dict[str, float]:
            """CPU seconds so far, by component (processes are classified once: reading every
            command line on each call would itself load the machine it measures)."""
            totals: dict[str, float] = {}
            for proc in psutil.process_iter():
                try:
                    if proc.pid not in classified:
                        classified[proc.pid] = (proc, classify(proc))
                    known, name = classified[proc.pid]
                    if name:
                        t = known.cpu_times()
                        totals[name] = totals.get(name, 0.0) + t.user + t.system
                except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
                    pass
            return totals

        # Workers boot and bind first; the relay then releases the whole backlog at once, so the drain
        # measures steady throughput, not interpreter start-up.
        worker("--no-relay")
        idle_since, last = time.monotonic(), -1.0
        while time.monotonic() - idle_since < 1.5:
            time.sleep(0.5)
            now_cpu = sum(v for k, v in component_cpu().items() if "workers" in k)
            if now_cpu - last > 0.05:
                idle_since = time.monotonic()
            last = now_cpu

        def database_work() -> tuple[int, int, int]:
            with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
                return conn.execute(
                    "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, tup_returned"
                    " + tup_fetched FROM pg_stat_database WHERE datname = current_database()"
                ).fetchone()

        def reads_by_relation() -> dict[str, int]:
            with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
                tables = conn.execute(
                    "SELECT relname || ' (seq scans)', seq_tup_read FROM pg_stat_user_tables"
                ).fetchall()
                indexes = conn.execute(
                    "SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes"
                ).fetchall()
            return dict(tables + indexes)

        database_before, reads_before = database_work(), reads_by_relation()
        cpu_before, machine_before = component_cpu(), psutil.cpu_times()
        started = time.monotonic()
        worker(command="relay")
        deadline = started + 300
        cpu_last, machine_last, sampled = cpu_before, machine_before, started
        while len(smsc_received()) - before < args.backlog and time.monotonic() < deadline:
            time.sleep(0.05)
            if (
                time.monotonic() - sampled > 1.0
            ):  # worker processes end with the bench: read them while they run
                cpu_last, machine_last, sampled = component_cpu(), psutil.cpu_times(), time.monotonic()
        cpu_last, machine_last = component_cpu(), psutil.cpu_times()
        done = len(smsc_received()) - before
        took = max(m["received_at"] for m in smsc_received()) - started
        parts = sum(m["segments"] for m in smsc_received()[before:])
        print(
            f"throughput phase: {done} SMS ({parts} submit_sm parts) drained in {took:.1f} s by booted"
            f" workers: {done / took:.0f} SMS/s, {parts / took:.0f} parts/s "
            f"({args.processes} worker processes x {args.threads} threads)"
        )
        cpu = {k: cpu_last.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_last}
        print(
            f"  CPU ms per SMS while draining (the machine has {psutil.cpu_count()} cores): "
            + ", ".join(
                f"{k} {v / max(done, 1) * 1000:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
            )
        )
        busy = {k: getattr(machine_last, k) - getattr(machine_before, k) for k in machine_last._fields}
        wall = sum(busy.values())
        print(
            "  the machine while draining:"
            f" {100 * (1 - (busy['idle'] + busy.get('iowait', 0)) / wall):.0f} % busy; "
            f"all components {sum(cpu.values()) / max(done, 1) * 1000:.2f} ms per SMS"
        )
        time.sleep(2)  # the statistics collector reports at intervals
        commits, written, read = (
            after - before for after, before in zip(database_work(), database_before, strict=True)
        )
        print(
            f"  postgres per SMS (until receipts and webhooks settle): {commits / max(done, 1):.2f} commits,"
            f" {written / max(done, 1):.1f} rows written, {read / max(done, 1):.1f} rows read"
        )
        reads = {k: v - reads_before.get(k, 0) for k, v in reads_by_relation().items()}
        print(
            "  where it reads, rows per SMS: "
            + ", ".join(
                f"{k} {v / max(done, 1):.1f}" for k, v in sorted(reads.items(), key=lambda kv: -kv[1])[:5]
            )
        )
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, 15) if proc.pid and os.getpgid(proc.pid) == proc.pid else proc.terminate()
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        smsc.terminate()
        smsc.wait(timeout=10)
        hooks.terminate()
        rd.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
