"""What a process knows about its dependencies, for /healthz, /readyz and the metrics.

A background thread of each API, worker and relay process checks them every
HEALTH_CHECK_INTERVAL_SECONDS and keeps, per dependency, its state (`up` or `down`, with the error)
and the time of its last change. Liveness (/healthz) reads that board and never waits on a
dependency, so a database outage cannot make an orchestrator restart healthy processes; readiness
(/readyz) checks afresh, since that is what a probe asks.

The API's checks are those of a redemption: the database answers and an outbox row can be written
(in a transaction that is rolled back: it proves the connection, a primary that takes writes, the
privileges and a lock within a second, and leaves nothing). Redis is a third check that only makes
the API *degraded*: the outbox holds the work until Redis is back. Workers and the relay need both
the database and Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from prometheus_client import Gauge

from service.kit.config import get_settings
from service.kit.db.engine import get_engine
from service.kit.supervisor import now_iso

DATABASE, OUTBOX, BROKER = "database", "outbox", "broker"

DEPENDENCY_UP = Gauge(
    "rewards_dependency_up",
    "1 while this process reaches the dependency (database, outbox: an outbox row can be written,"
    " broker: Redis), as of its last check",
    ["dependency"],
    multiprocess_mode="mostrecent",
)
API_DEGRADED = Gauge(
    "rewards_api_degraded",
    "1 while the API takes redemptions but cannot reach Redis (the outbox holds the work)",
    multiprocess_mode="mostrecent",
)


@dataclass
class State:
    state: str  # up, down, unknown
    since: str
    detail: str | None = None

    def view(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "detail": self.detail}


class Board:
    """Per dependency: its state and the time it last changed."""

    def __init__(self, names: Iterable[str]):
        self._lock = threading.Lock()
        self._states = {name: State("unknown", now_iso()) for name in names}

    def set(self, name: str, state: str, detail: str | None = None) -> None:
        with self._lock:
            current = self._states.get(name)
            if current is None or current.state != state:
                self._states[name] = State(state, now_iso(), detail)
            else:
                current.detail = detail
        if state != "unknown":
            DEPENDENCY_UP.labels(name).set(1 if state == "up" else 0)

    def state(self, name: str) -> str:
        with self._lock:
            return self._states[name].state

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: s.view() for name, s in self._states.items()}


def _error(exc: BaseException) -> str:
    # The class only (the driver's own for a database error: LockNotAvailable, ReadOnlySqlTransaction,
    # DiskFull...): /healthz and /readyz answer anyone, and a driver's message names hosts and paths.
    return f"error: {type(getattr(exc, 'orig', None) or exc).__name__}"


@lru_cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url or "", socket_timeout=1, socket_connect_timeout=1)


def check_database(board: Board, *, outbox: bool) -> None:
    """The database answers; with `outbox`, an outbox row can be written (rolled back)."""
    try:
        # Through the engine, not a driver connection: what is checked is the pool the requests use.
        with get_engine().connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            conn.rollback()
            board.set(DATABASE, "up")
            if not outbox:
                return
            try:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
                conn.exec_driver_sql("SET LOCAL statement_timeout = '2s'")
                conn.exec_driver_sql(
                    "INSERT INTO outbox (message_id, queue, actor, payload)"
                    " VALUES (uuid7(), 'readiness', 'readiness', '{}')"
                )
                board.set(OUTBOX, "up")
            except Exception as exc:  # noqa: BLE001 - any failure means "cannot take a redemption"
                board.set(OUTBOX, "down", _error(exc))
            finally:
                conn.rollback()  # the row never existed for anyone else
    except Exception as exc:  # noqa: BLE001 - unreachable, whatever the driver says
        board.set(DATABASE, "down", _error(exc))
        if outbox:
            board.set(OUTBOX, "down", "not checked: the database is unreachable")


def check_broker(board: Board) -> None:
    try:
        _redis().ping()
        board.set(BROKER, "up")
    except Exception as exc:  # noqa: BLE001
        board.set(BROKER, "down", _error(exc))


class Monitor:
    """Checks on a daemon thread every `interval` seconds, into a board."""

    def __init__(self, board: Board, check: Callable[[], None], interval: float | None = None):
        self.board = board
        self.check = check
        self.interval = interval or get_settings().health_check_interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="health-monitor")

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            self.check()
            if self._stop.wait(self.interval):
                return


# --- roles -----------------------------------------------------------------------------------------


def api_board() -> Board:
    return Board((DATABASE, OUTBOX, BROKER))


def check_api(board: Board) -> None:
    check_database(board, outbox=True)
    check_broker(board)
    readiness(board)


def readiness(board: Board) -> str:
    """The API's readiness from its board: `ready`, `degraded` (Redis away: redemptions still taken)
    or `unready` (no redemption can be taken)."""
    if board.state(DATABASE) != "up" or board.state(OUTBOX) != "up":
        verdict = "unready"
    elif board.state(BROKER) != "up":
        verdict = "degraded"
    else:
        verdict = "ready"
    API_DEGRADED.set(1 if verdict == "degraded" else 0)
    return verdict


def worker_board() -> Board:
    return Board((DATABASE, BROKER))


def check_worker(board: Board) -> None:
    check_database(board, outbox=False)
    check_broker(board)


def reset() -> None:
    """Forget the Redis client (tests point processes at other servers)."""
    _redis.cache_clear()
