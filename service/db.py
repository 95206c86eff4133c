"""Engine and sessions. One pooled engine per process; domain functions take a Session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import service.models  # noqa: F401  (every mapper configured before the first session)
from service import tracing
from service.base import Base
from service.config import get_settings

__all__ = ["Base", "batch", "driver", "get_engine", "new_session", "reset_engine", "transaction"]


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
        # No statement waits on a lock for longer than this; an API request then fails fast (409/503)
        # instead of holding a worker thread and a pooled connection.
        connect_args={
            "application_name": "rewards",
            "options": f"-c lock_timeout={settings.db_lock_timeout_ms}",
        },
    )
    tracing.instrument_engine(engine)
    return engine


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


def scalar(row: tuple[Any, ...] | None) -> Any:
    """The first column of a row that the statement always returns (an aggregate, a RETURNING)."""
    if row is None:
        raise LookupError("the statement returned no row")
    return row[0]


def reset_engine() -> None:
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    _sessionmaker.cache_clear()


def batch(rows: list[dict]) -> str:
    """A batch of records as one JSON document, for `jsonb_to_recordset(%s::jsonb)` in a statement
    that writes a whole batch at once.

    Parallel arrays for unnest() cost more: psycopg dumps a list element by element, and a text that
    holds JSON must be escaped; fifty JSON texts took about 2.8 ms of CPU that way, one JSON document
    of the same records about 0.1 ms (measured on loopback)."""
    return json.dumps(rows, default=str, separators=(",", ":"))
