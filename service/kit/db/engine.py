"""Engine and sessions. One pooled engine per process; domain functions take a Session."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from service.kit.config import get_settings
from service.kit.db.base import Base
from service.kit.observability import tracing

R = TypeVar("R")

__all__ = [
    "Base",
    "batch",
    "driver",
    "get_engine",
    "new_session",
    "one",
    "reset_engine",
    "transaction",
    "unavailable",
    "UNAVAILABLE_ERRORS",
]


def sqlalchemy_url(url: str) -> str:
    """Accept plain libpq URLs (what operators paste) and pick the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set (the CLI sets it in embedded mode)")
    engine = create_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        # A request never waits longer than this for a pooled connection (then 503, not a hang).
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=connection_settings(),
    )
    tracing.instrument_engine(engine)
    return engine


def connection_settings() -> dict[str, Any]:
    """What every connection of the service is opened with, pooled by SQLAlchemy or by psycopg."""
    settings = get_settings()
    return {
        "application_name": "rewards",
        # No statement waits on a lock for longer than this; an API request then fails fast (409/503)
        # instead of holding a worker and a pooled connection. A server that accepts the connection
        # but never answers (frozen, half-dead) costs connect_timeout, and a peer that vanished
        # without closing the connection is found by TCP keepalives within about 20 s.
        "options": f"-c lock_timeout={settings.db_lock_timeout_ms}",
        "connect_timeout": settings.db_connect_timeout_seconds,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 2,
    }


async def open_async_pool() -> AsyncConnectionPool:
    """The psycopg pool of the API's hot path (redemptions), in the event loop: no thread hop and no
    ORM session per request. Connections are not pinged on checkout (a round trip per request); one
    that the server dropped fails its request (503, Retry-After) and is discarded, and the failure
    makes the pool check its idle connections at once (see discard_broken)."""
    settings = get_settings()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set (the CLI sets it in embedded mode)")
    pool = AsyncConnectionPool(
        libpq_url(sqlalchemy_url(settings.database_url)),
        min_size=2,
        max_size=settings.db_hot_pool_size,
        # A request never waits longer than this for a connection (PoolTimeout: then 503, not a hang).
        timeout=settings.db_hot_pool_timeout_seconds,
        # Autocommit: the hot path opens its transactions itself, as the first statement of its first
        # pipeline. Otherwise psycopg sends its own BEGIN ahead of the pipeline and waits for it: one
        # more round trip per redemption (service/kit/db/pipeline.py).
        kwargs={**connection_settings(), "autocommit": True},
        open=False,
        name="hot-path",
        configure=tracing.instrument_async_connection if tracing.enabled() else None,
    )
    await pool.open(wait=False)
    return pool


@lru_cache
def _sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _sessionmaker()()


@contextmanager
def transaction() -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any exception."""
    with new_session() as session, session.begin():
        yield session


def driver(session: Session) -> psycopg.Connection[Any]:
    """The psycopg connection under the session's transaction, for hot-path SQL: no ORM or Core
    compilation, and psycopg prepares repeated statements on the server."""
    return raw_connection(session.connection())


def raw_connection(connection: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy connection (COPY, streaming, transaction settings)."""
    raw = connection.connection.driver_connection
    assert raw is not None, "a checked-out connection has its driver connection"
    return raw


def one(row: R | None) -> R:
    """The row of a statement that always returns one (an aggregate, a RETURNING), whatever its row
    factory: `one(db.cursor(row_factory=scalar_row).execute(...).fetchone())`."""
    if row is None:
        raise LookupError("the statement returned no row")
    return row


# Errors that mean "the database is away or cannot take writes now", not "this request is wrong":
# refused or lost connections, a server shutting down or starting up, a full disk, too many
# connections, a pool with no free connection. The API answers them 503 with Retry-After.
UNAVAILABLE_ERRORS = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)


def unavailable(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) says the database is away, not that the request was wrong."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UNAVAILABLE_ERRORS):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def reset_engine() -> None:
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    _sessionmaker.cache_clear()


def batch(rows: Sequence[Mapping[str, object]]) -> str:
    """A batch of records as one JSON document, for `jsonb_to_recordset(%(rows)s::jsonb)` in a statement
    that writes a whole batch at once.

    Parallel arrays for unnest() cost more: psycopg dumps a list element by element, and a text that
    holds JSON must be escaped; fifty JSON texts took about 2.8 ms of CPU that way, one JSON document
    of the same records about 0.1 ms (measured on loopback)."""
    return json.dumps(rows, default=str, separators=(",", ":"))


async def hot_pool(request: Request) -> AsyncConnectionPool:
    """This process's asyncio pool (the app's lifespan makes room for it and closes it), opened by the
    first request that needs it, in the running event loop: an app that never touches the database,
    e.g. to render its OpenAPI document, opens none."""
    state = request.app.state
    if state.db_pool is None:
        async with state.db_pool_lock:
            if state.db_pool is None:
                state.db_pool = await open_async_pool()
    return state.db_pool
