"""Counting failed secrets (card PINs, staff passwords) so that guessing is slowed for whoever guesses,
not for the secret's owner.

One row per (kind, target, client): `target` is what is guessed at (a card number's fingerprint, a
hash of an e-mail address; empty for a client's count across all targets), `client` who guesses (a
partner, an address; empty for the target's count across all clients). A `Policy` gives a count its
free failures, then delays that double from `first_delay` up to `max_delay` between one failure and
the next attempt that is heard; a count is forgotten `forget_after` its last failure. Rows are
written with INSERT ... ON CONFLICT, so parallel failures are all counted; `purge` (the workers'
housekeeping) deletes the forgotten ones.

The domains decide which counts a failure goes to and what a delay means for the answer: cards in
service/cards/lockout.py, staff sign-in in service/console/accounts.py."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row, scalar_row
from sqlalchemy import DateTime, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.db.base import Base
from service.kit.db.engine import one

ANY = ""  # the target's count across all clients, or the client's across all targets


class ThrottleCount(Base):
    __tablename__ = "auth_throttle"
    __table_args__ = (Index("ix_auth_throttle_last_failed", "last_failed_at"),)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    target: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    client: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # No attempt of this client on this target is heard before this time (NULL: none is held back).
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Policy:
    free: int  # failures answered without a delay
    first_delay: timedelta  # after the `free`-th failure; each further failure doubles it
    max_delay: timedelta
    forget_after: timedelta  # the count starts again this long after its last failure

    def delay(self, failures: int) -> timedelta:
        if failures < self.free:
            return timedelta(0)
        return min(self.first_delay * 2 ** min(failures - self.free, 20), self.max_delay)

    def remaining(self, failures: int) -> int:
        """Failures left before the first delay."""
        return max(self.free - failures, 0)


@dataclass(frozen=True)
class Count:
    failures: int
    blocked_until: datetime | None


def address_client(address: str | None) -> str:
    """A network address as a client: IPv4 as it is, IPv6 by its /64 (one subscriber's line has a whole
    /64, so counting single IPv6 addresses would count nothing)."""
    if not address:
        return "address:unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "address:" + address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"address:{ip.ipv4_mapped}"
        return f"address:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address:{ip}"


@dataclass(frozen=True)
class _Block:
    client: str
    blocked_until: datetime


@dataclass(frozen=True)
class _Stored:
    failures: int
    blocked_until: datetime | None
    last_failed_at: datetime


def blocked(
    db: Connection[Any], kind: str, target: bytes, clients: Sequence[str], now: datetime
) -> dict[str, datetime]:
    """The counts of `target` (and of `clients`) that hold attempts back now: client -> until when."""
    rows = (
        db.cursor(row_factory=class_row(_Block))
        .execute(
            "SELECT client, blocked_until FROM auth_throttle WHERE kind = %(kind)s AND target = %(target)s"
            " AND client = ANY(%(clients)s) AND blocked_until > %(now)s",
            {"kind": kind, "target": target, "clients": list(clients), "now": now},
        )
        .fetchall()
    )
    return {row.client: row.blocked_until for row in rows}


def fail(db: Connection[Any], kind: str, target: bytes, client: str, policy: Policy, now: datetime) -> Count:
    """Counts one failure; past the policy's free failures, holds the next attempt back."""
    failures: int = one(
        db.cursor(row_factory=scalar_row)
        .execute(
            "INSERT INTO auth_throttle AS t (kind, target, client, failures, last_failed_at)"
            " VALUES (%(kind)s, %(target)s, %(client)s, 1, %(now)s)"
            " ON CONFLICT (kind, target, client) DO UPDATE SET"
            " failures = CASE WHEN t.last_failed_at <= %(forget)s THEN 1 ELSE t.failures + 1 END,"
            " last_failed_at = %(now)s RETURNING failures",
            {
                "kind": kind,
                "target": target,
                "client": client,
                "now": now,
                "forget": now - policy.forget_after,
            },
        )
        .fetchone()
    )
    delay = policy.delay(failures)
    until = now + delay if delay else None
    db.execute(
        "UPDATE auth_throttle SET blocked_until = %(until)s"
        " WHERE kind = %(kind)s AND target = %(target)s AND client = %(client)s",
        {"kind": kind, "target": target, "client": client, "until": until},
    )
    return Count(failures, until)


def count(db: Connection[Any], kind: str, target: bytes, client: str, policy: Policy, now: datetime) -> Count:
    """A count as it stands (0 once forgotten)."""
    row = (
        db.cursor(row_factory=class_row(_Stored))
        .execute(
            "SELECT failures, blocked_until, last_failed_at FROM auth_throttle"
            " WHERE kind = %(kind)s AND target = %(target)s AND client = %(client)s",
            {"kind": kind, "target": target, "client": client},
        )
        .fetchone()
    )
    if row is None or row.last_failed_at <= now - policy.forget_after:
        return Count(0, None)
    held = row.blocked_until if row.blocked_until is not None and row.blocked_until > now else None
    return Count(row.failures, held)


def clear(db: Connection[Any], kind: str, target: bytes, client: str | None = None) -> int:
    """Forgets the counts of `target`: one client's, or all of them (None)."""
    return db.execute(
        "DELETE FROM auth_throttle WHERE kind = %(kind)s AND target = %(target)s"
        " AND (%(client)s::text IS NULL OR client = %(client)s)",
        {"kind": kind, "target": target, "client": client},
    ).rowcount


def purge(db: Connection[Any], now: datetime, older_than: timedelta, batch: int = 10_000) -> int:
    """Deletes counts whose last failure is older than `older_than` and that hold nothing back."""
    return db.execute(
        "DELETE FROM auth_throttle WHERE ctid = ANY(ARRAY(SELECT ctid FROM auth_throttle"
        " WHERE last_failed_at < %(before)s AND (blocked_until IS NULL OR blocked_until < %(now)s)"
        " LIMIT %(batch)s))",
        {"before": now - older_than, "now": now, "batch": batch},
    ).rowcount
