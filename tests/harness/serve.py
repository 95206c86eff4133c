"""`rewards serve` on the embedded default (its own PostgreSQL and Redis) under load, with nobody
restarting anything: the faults kill one of its processes with SIGKILL and only its own supervision
brings the service back. The SMS go to the harness's test SMSC, so the final check (verdict.py) sees
each one.

The figure of a fault is the time from the kill to the first redemption served end to end after it:
a redemption asked for after the kill, answered 201, whose SMS reached the SMSC."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from tests.harness.faults import Window
from tests.harness.loyalty import LoyaltySystem
from tests.harness.stack import PROGRAM, ROOT, SKU, Service, free_port, log, wait_ready

# Seconds from the kill to the first redemption served end to end (issue 26).
TARGETS = {"worker": 5.0, "postgres": 15.0, "redis": 10.0}


@dataclass
class ServeStack:
    work: Path
    data: Path
    env: dict[str, str]
    api_port: int
    metrics_port: int
    smsc: Service
    smsc_record: Path
    gateway_record: Path  # none here; the final check reads both providers' records
    key: str = ""
    proc: subprocess.Popen | None = None
    serve_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.serve_log = self.work / "logs" / "serve.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def database_url(self) -> str:
        lines = (self.data / "pg" / "postmaster.pid").read_text().splitlines()
        return f"postgresql://postgres:@/rewards?host={lines[4]}"

    def sql(self, statement: str, params: Any = None) -> list[tuple]:
        """A statement on the service's database, retried while PostgreSQL is being restarted."""
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
                    cursor = conn.execute(statement, params)
                    return cursor.fetchall() if cursor.description else []
            except (psycopg.OperationalError, OSError, IndexError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def rewards(self, *cli: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", *cli],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode:
            raise RuntimeError(f"rewards {' '.join(cli)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    # --- what `rewards serve` says about itself ---------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The supervisor's state file (what the API's /healthz shows)."""
        return json.loads((self.data / "serve-state.json").read_text())

    def worker_health(self) -> dict[str, Any]:
        """/healthz of `rewards worker` on its metrics port: its Dramatiq commands."""
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=5).json()

    def restarts(self) -> int:
        """Restarts by serve's supervisor and by the one of `rewards worker`, so far."""
        total = sum(c["restarts"] for c in self.state()["components"].values())
        try:
            total += sum(
                c.get("restarts") or 0 for c in self.worker_health()["components"].values() if "restarts" in c
            )
        except httpx.HTTPError:
            pass
        return total

    # --- its processes ----------------------------------------------------------------------------

    def postmaster_pid(self) -> int:
        return int((self.data / "pg" / "postmaster.pid").read_text().splitlines()[0])

    def redis_pid(self) -> int:
        return int((self.data / "redis" / "redis.pid").read_text().strip())

    def sms_worker_pids(self) -> list[int]:
        """The Dramatiq worker processes that send reward SMS: children of the `dramatiq` commands
        that `rewards worker` runs for the reward-SMS queue."""
        assert self.proc is not None
        found = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = " ".join(p.cmdline())
                parent = " ".join(p.parent().cmdline())
            except (psutil.NoSuchProcess, AttributeError):
                continue
            if "sms_transactional" in cmd and "sms_transactional" in parent and "resource_tracker" not in cmd:
                found.append(p.pid)
        return found


def _env(data: Path, api_port: int, metrics_port: int, smsc_port: int, overrides: dict[str, str]) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("DATABASE_URL", "REDIS_URL", "ENCRYPTION_KEY", "ENCRYPTION_KEYS", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        {
            "REWARDS_DATA_DIR": str(data),
            "LOG_LEVEL": "WARNING",
            "SMS_PROVIDER": "smpp",
            "SMPP_HOST": "127.0.0.1",
            "SMPP_PORT": str(smsc_port),
            "SMPP_SYSTEM_ID": "rewards",
            "SMS_RATE_LIMIT": "5000",
            # An SMS whose outcome was lost (its worker killed mid-submit) and that no receipt settles
            # is resent after 30 s rather than 120: the final check waits for it.
            "SMS_IN_DOUBT_SECONDS": "30",
            "METRICS_PORT": str(metrics_port),
            "PYTHONUNBUFFERED": "1",
            **overrides,
        }
    )
    return env


def _prepare(st: ServeStack, codes: int) -> None:
    """The database before the first start: migrations, the demo catalog, codes for the load, no
    webhook receivers (the demo's are not on this machine) and a budget the run cannot exhaust, a
    loyalty key. The CLI commands share one embedded PostgreSQL that this process starts and stops."""
    from service.kit.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(st.data / "pg")
    pg.start()
    try:
        st.rewards("migrate")
        st.rewards("catalog", "apply", str(ROOT / "catalog" / "demo"))
        csv = st.work / "codes.csv"
        csv.write_text("".join(f"FT-{secrets.token_hex(6).upper()}\n" for _ in range(codes)))
        st.rewards("codes", "import", SKU, str(csv))
        st.sql("UPDATE programs SET webhook_url = NULL, monthly_budget_minor = 100000000000")
        st.key = (
            st.rewards("keys", "create", "--role", "loyalty", "--program", PROGRAM, "--name", "faults")
            .strip()
            .splitlines()[-1]
        )
    finally:
        pg.stop()


@contextmanager
def serve_stack(
    *, codes: int = 5000, env_overrides: dict[str, str] | None = None, processes: int = 2
) -> Iterator[ServeStack]:
    """`rewards serve --processes N` on a new embedded data folder, the test SMSC beside it; stopped
    with SIGINT (as Ctrl-C) however the block ends."""
    work = Path(tempfile.mkdtemp(prefix="serve-faults-"))
    (work / "logs").mkdir()
    data = work / "var"
    api_port, metrics_port, smsc_port = free_port(), free_port(), free_port()
    while metrics_port + 1 in (api_port, smsc_port):
        metrics_port = free_port()
    env = _env(data, api_port, metrics_port, smsc_port, env_overrides or {})
    smsc_record, gateway_record = work / "smsc.jsonl", work / "gateway.jsonl"
    smsc_record.touch()
    gateway_record.touch()
    smsc = Service(
        "smsc",
        [sys.executable, "-m", "service.cli", "smsc", "--port", str(smsc_port), "--receipt-delay", "1"]
        + ["--record", str(smsc_record)],
        env,
        work / "logs",
    )
    st = ServeStack(work, data, env, api_port, metrics_port, smsc, smsc_record, gateway_record)
    try:
        _prepare(st, codes)
        smsc.start()
        started = time.monotonic()
        with st.serve_log.open("ab") as out:
            st.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(api_port)]
                + ["--processes", str(processes)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        wait_ready(st.base, 180)
        log(f"rewards serve ready after {time.monotonic() - started:.1f} s (data in {data})")
        yield st
    finally:
        if st.proc is not None and st.proc.poll() is None:
            st.proc.send_signal(signal.SIGINT)
            try:
                st.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(st.proc.pid, signal.SIGKILL)
                st.proc.wait(timeout=10)
        smsc.stop()
        if os.environ.get("KEEP_SERVE_FAULTS"):
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# --- the faults -------------------------------------------------------------------------------------


def kill_sms_worker(st: ServeStack) -> Window:
    started = time.monotonic()
    victims = st.sms_worker_pids()
    assert victims, "no reward-SMS worker process to kill"
    os.kill(victims[0], signal.SIGKILL)
    return Window(started, time.monotonic(), f"SIGKILL of 1 of {len(victims)} reward-SMS Dramatiq processes")


def kill_postgres(st: ServeStack) -> Window:
    started = time.monotonic()
    os.kill(st.postmaster_pid(), signal.SIGKILL)
    return Window(started, time.monotonic(), "SIGKILL of the postmaster; serve starts it (crash recovery)")


def kill_redis(st: ServeStack) -> Window:
    started = time.monotonic()
    os.kill(st.redis_pid(), signal.SIGKILL)
    return Window(started, time.monotonic(), "SIGKILL of redis-server; serve starts it (AOF kept)")


# name -> (fault, the part it kills: its target in TARGETS)
SERVE_FAULTS: dict[str, tuple[Callable[[ServeStack], Window], str]] = {
    "serve: worker SIGKILL": (kill_sms_worker, "worker"),
    "serve: postgres SIGKILL": (kill_postgres, "postgres"),
    "serve: redis SIGKILL": (kill_redis, "redis"),
}


@dataclass
class ServeResult:
    name: str
    target: float
    window: Window
    recovery: float | None  # seconds from the kill to the first redemption served end to end
    api_errors: dict[str, int]  # answers other than 201 to attempts sent from the kill to the recovery
    restarts: int  # restarts by the supervisors during the phase

    @property
    def within_target(self) -> bool:
        return self.recovery is not None and self.recovery <= self.target


class SmsWatch:
    """When each phone number's SMS reached the SMSC (monotonic, the SMSC's own clock: the same on
    one machine), read from its record as it grows."""

    def __init__(self, record: Path):
        self.record = record
        self.offset = 0
        self.seen: dict[str, float] = {}

    def poll(self) -> None:
        with self.record.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            message = json.loads(line)
            self.seen.setdefault(message["to"], float(message.get("received_at") or time.monotonic()))


def first_served_after(
    st: ServeStack, load: LoyaltySystem, killed_at: float, within: float = 120
) -> float | None:
    """Seconds from `killed_at` until a redemption asked for after it had its 201 and its SMS."""
    watch = SmsWatch(st.smsc_record)
    answered_at: dict[int, float] = {}
    deadline = killed_at + within
    while time.monotonic() < deadline:
        now = time.monotonic()
        for op in list(load.ops):
            if op.started >= killed_at and op.final == 201 and op.n not in answered_at:
                answered_at[op.n] = now
        watch.poll()
        served = [
            max(answered, watch.seen[op_msisdn])
            for n, answered in answered_at.items()
            if (op_msisdn := f"+7747{n:07d}") in watch.seen
        ]
        if served:
            return min(served) - killed_at
        time.sleep(0.05)
    return None


def run_serve_fault(st: ServeStack, load: LoyaltySystem, name: str, settle: float = 5.0) -> ServeResult:
    """Steady load for `settle` seconds, the kill, then the recovery measured; the phase (the load's
    label of the attempts) runs until the recovery and 3 s after it."""
    fault, part = SERVE_FAULTS[name]
    time.sleep(settle)
    restarts = st.restarts()
    load.phase = name
    log(f"fault: {name}")
    window = fault(st)
    recovery = first_served_after(st, load, window.started)
    log(f"  first redemption served end to end {recovery} s after the kill ({window.note})")
    time.sleep(3)
    answers = dict(load.answers.get(name, {}))
    load.phase = f"after {name}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the restarts are counted once serve says all are running
        if all(c["state"] == "running" for c in st.state()["components"].values()):
            break
        time.sleep(0.5)
    return ServeResult(
        name,
        TARGETS[part],
        window,
        recovery,
        {k: v for k, v in answers.items() if k != "201"},
        st.restarts() - restarts,
    )


def serve_table(results: list[ServeResult], verdict_lost: dict, verdict_doubled: dict) -> str:
    head = (
        "| fault (rewards serve, nobody restarting it) | recovery s (kill → first redemption served:"
        " 201 + SMS) | target s | API answers other than 201 | restarts by serve | lost | doubled |"
    )
    out = [head, "|" + " --- |" * 7]
    for r in results:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r.api_errors.items())) or "none"
        recovery = "-" if r.recovery is None else f"{r.recovery:.1f}"
        out.append(
            f"| {r.name} | {recovery} | ≤ {r.target:.0f} | {errors} | {r.restarts} |"
            f" {verdict_lost.get(r.name, 0)} | {verdict_doubled.get(r.name, 0)} |"
        )
    return "\n".join(out)
