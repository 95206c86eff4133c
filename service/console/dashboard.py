"""The live dashboard's figures: SQL over the service's own tables, each query answered from an
index in a few milliseconds on a million redemptions (bench/dashboard.py measures them).

Redemption ids are UUIDv7: their first 48 bits are the creation time in milliseconds, so "since T" is
a range of the primary key (or of `(program_id, id)`), and counting it needs no index on created_at
and no heap visit. `time_floor` is the smallest id of a millisecond."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult
from sqlalchemy.orm import Session

from service.catalog.snapshot import CatalogSnapshot, get_snapshot

WINDOW_MINUTES = 60
RUNWAY_DAYS = 7

# The smallest UUIDv7 of the millisecond of a timestamptz, in SQL (for per-program local midnights).
SQL_TIME_FLOOR = (
    "CAST(lpad(to_hex(CAST(floor(extract(epoch FROM {ts}) * 1000) AS bigint)), 12, '0')"
    " || '00000000000000000000' AS uuid)"
)


def time_floor(at: datetime) -> uuid.UUID:
    """The smallest UUIDv7 created at or after `at` (ids compare as bytes, the time first)."""
    ms = int(at.timestamp() * 1000)
    return uuid.UUID(bytes=ms.to_bytes(6, "big") + bytes(10))


@dataclass(frozen=True)
class Scope:
    """What the viewer may see: program ids (None: all), and a partner (its skus only)."""

    program_ids: list[int] | None
    partner: str | None
    sees_programs: bool = True


# --- the queries, one function each (the benchmark times them one by one) -------------------------

TODAY = (
    "SELECT p.code, (SELECT count(*) FROM redemptions r WHERE r.program_id = p.id AND r.id >= "
    + SQL_TIME_FLOOR.format(ts="(date_trunc('day', now() AT TIME ZONE p.timezone) AT TIME ZONE p.timezone)")
    + ") AS today FROM programs p"
    " WHERE p.active AND (CAST(%(programs)s AS int[]) IS NULL OR p.id = ANY(%(programs)s))"
    " ORDER BY p.code"
)

PER_MINUTE = (
    "SELECT p.code, date_trunc('minute', r.created_at) AS minute, count(*) AS n"
    " FROM redemptions r JOIN programs p ON p.id = r.program_id"
    " WHERE r.id >= %(since)s"
    "  AND (CAST(%(programs)s AS int[]) IS NULL OR r.program_id = ANY(%(programs)s))"
    " GROUP BY 1, 2 ORDER BY 2"
)

SMS = (
    "SELECT m.status, count(*) AS n FROM sms_messages m JOIN redemptions r ON r.id = m.redemption_id"
    " WHERE m.redemption_id >= %(since)s AND r.id >= %(since)s"
    "  AND (CAST(%(programs)s AS int[]) IS NULL OR r.program_id = ANY(%(programs)s))"
    " GROUP BY m.status"
)
SMS_ALL = (
    "SELECT m.status, count(*) AS n FROM sms_messages m WHERE m.redemption_id >= %(since)s GROUP BY m.status"
)

LATENCY = (
    "SELECT count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY x) AS p50,"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY x) AS p95 FROM ("
    "  SELECT extract(epoch FROM m.done_at - r.created_at) AS x"
    "  FROM sms_messages m JOIN redemptions r ON r.id = m.redemption_id"
    "  WHERE m.redemption_id >= %(since)s AND r.id >= %(since)s"
    "   AND m.send = 0 AND m.status = 'delivered'"
    "   AND (CAST(%(programs)s AS int[]) IS NULL OR r.program_id = ANY(%(programs)s))) d"
)

BUDGET = (
    "SELECT p.code, p.currency, p.monthly_budget_minor AS budget, coalesce(u.spent_minor, 0) AS spent"
    " FROM programs p LEFT JOIN program_budget_usage u ON u.program_id = p.id"
    "  AND u.month = CAST(date_trunc('month', now() AT TIME ZONE p.timezone) AS date)"
    " WHERE p.active AND (CAST(%(programs)s AS int[]) IS NULL OR p.id = ANY(%(programs)s))"
    " ORDER BY p.code"
)

RUNWAY = (
    "SELECT p.sku, pa.code AS partner, t.taken,"
    " (SELECT count(*) FROM (SELECT 1 FROM codes c WHERE c.product_id = p.id AND c.status = 'available'"
    "   AND coalesce(c.expires_at, 'infinity') > now()"
    "   LIMIT greatest(%(floor)s, t.taken * %(cap_days)s / %(days)s)) a) AS available"
    " FROM products p JOIN partners pa ON pa.id = p.partner_id"
    " CROSS JOIN LATERAL (SELECT count(*) AS taken FROM codes c WHERE c.product_id = p.id"
    "   AND c.status IN ('reserved', 'issued') AND c.status_changed_at >= %(since_at)s) t"
    " WHERE p.kind = 'code' AND p.active"
    "  AND (CAST(%(partner)s AS text) IS NULL OR pa.code = %(partner)s)"
    " ORDER BY p.sku"
)
# A pool is counted up to RUNWAY_CAP_DAYS of its pace (at least RUNWAY_FLOOR codes): beyond that the
# runway is "more than" and the exact size is the stock page's business. Counting a big, slow pool
# to its end would be the dashboard's most expensive read.
RUNWAY_CAP_DAYS = 30  # the dashboard's bars are full at 30 days
RUNWAY_FLOOR = 1000

OUTBOX = (
    "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS waiting,"
    " (SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1) AS oldest"
)


def _run(session: Session, sql: str, params: dict[str, Any] | None = None) -> CursorResult[Any]:
    """A statement of this module, run by psycopg as written (its `%(name)s` placeholders) in the
    session's transaction."""
    return session.connection().exec_driver_sql(sql, params or {})


def _programs(scope: Scope) -> list[int] | None:
    return scope.program_ids


def today(session: Session, scope: Scope, now: datetime) -> dict[str, int]:
    if not scope.sees_programs:
        return {}
    return {r.code: r.today for r in _run(session, TODAY, {"programs": _programs(scope)})}


def per_minute(session: Session, scope: Scope, now: datetime) -> dict[str, Any]:
    """Counts per program for each of the last WINDOW_MINUTES minutes (zeros included)."""
    if not scope.sees_programs:
        return {"minutes": [], "series": {}}
    end = now.replace(second=0, microsecond=0)
    minutes = [end - timedelta(minutes=i) for i in range(WINDOW_MINUTES - 1, -1, -1)]
    rows = _run(session, PER_MINUTE, {"since": time_floor(minutes[0]), "programs": _programs(scope)})
    series: dict[str, dict[datetime, int]] = {}
    for r in rows:
        series.setdefault(r.code, {})[r.minute] = r.n
    return {
        "minutes": [int(m.timestamp()) for m in minutes],
        "series": {code: [counts.get(m, 0) for m in minutes] for code, counts in sorted(series.items())},
    }


def sms(session: Session, scope: Scope, now: datetime) -> dict[str, int]:
    """The SMS of the last hour's redemptions by state (a live view; older ones are settled)."""
    if not scope.sees_programs:
        return {}
    since = time_floor(now - timedelta(minutes=WINDOW_MINUTES))
    programs = _programs(scope)
    # unscoped: one range of the SMS index; scoped: that range merged with the redemptions' own
    if programs is None:
        rows = _run(session, SMS_ALL, {"since": since})
    else:
        rows = _run(session, SMS, {"since": since, "programs": programs})
    counts = {r.status: r.n for r in rows}
    return {
        "delivered": counts.get("delivered", 0),
        "failed": counts.get("failed", 0),
        "pending": sum(counts.get(s, 0) for s in ("pending", "submitting", "sent")),
    }


def latency(session: Session, scope: Scope, now: datetime) -> dict[str, Any]:
    if not scope.sees_programs:
        return {}
    row = _run(
        session, LATENCY, {"since": time_floor(now - timedelta(hours=1)), "programs": _programs(scope)}
    ).one()
    return {"count": row.n, "p50": row.p50, "p95": row.p95}


def budget(session: Session, scope: Scope, now: datetime) -> list[dict[str, Any]]:
    if not scope.sees_programs:
        return []
    return [
        {"program": r.code, "currency": r.currency, "budget": r.budget, "spent": r.spent}
        for r in _run(session, BUDGET, {"programs": _programs(scope)})
    ]


def runway(session: Session, scope: Scope, now: datetime) -> list[dict[str, Any]]:
    """Days of stock at the last RUNWAY_DAYS days' pace (None when nothing was taken): codes that
    left the pool, for a redemption or an exchange, and did not come back (a cancel returns them)."""
    if scope.program_ids is not None and scope.partner is None:
        return []  # a support agent scoped to programs sees its programs' figures, not partners' pools
    since_at = now - timedelta(days=RUNWAY_DAYS)
    rows = _run(
        session,
        RUNWAY,
        {
            "since_at": since_at,
            "partner": scope.partner,
            "floor": RUNWAY_FLOOR,
            "cap_days": RUNWAY_CAP_DAYS,
            "days": RUNWAY_DAYS,
        },
    )
    out = []
    for r in rows:
        pace = r.taken / RUNWAY_DAYS
        cap = max(RUNWAY_FLOOR, r.taken * RUNWAY_CAP_DAYS // RUNWAY_DAYS)
        out.append(
            {
                "sku": r.sku,
                "partner": r.partner,
                "available": r.available,
                "at_least": r.available >= cap,  # counted up to the cap: there may be more
                "taken": r.taken,  # in the last RUNWAY_DAYS days
                "per_day": round(pace, 1),
                "days": round(r.available / pace, 1) if pace else None,
            }
        )
    return out


def outbox(session: Session, scope: Scope, now: datetime) -> dict[str, Any]:
    if scope.partner is not None or scope.program_ids is not None:
        return {}
    row = _run(session, OUTBOX).one()
    return {
        "waiting": row.waiting,
        "oldest_seconds": round((now - row.oldest).total_seconds(), 1) if row.oldest else None,
    }


QUERIES = {
    "today": today,
    "per_minute": per_minute,
    "sms": sms,
    "latency": latency,
    "budget": budget,
    "runway": runway,
    "outbox": outbox,
}


@dataclass
class Figures:
    at: datetime
    values: dict[str, Any] = field(default_factory=dict)


def figures(session: Session, scope: Scope, now: datetime | None = None) -> Figures:
    now = now or datetime.now(UTC)
    return Figures(now, {name: query(session, scope, now) for name, query in QUERIES.items()})


def program_ids(snap: CatalogSnapshot, codes: frozenset[str] | None) -> list[int] | None:
    if codes is None:
        return None
    return sorted(p.id for code, p in snap.programs.items() if code in codes)


def scope_for(session: Session, program_codes: frozenset[str] | None, partner: str | None) -> Scope:
    snap = get_snapshot(session)
    if partner is not None:
        return Scope(program_ids=[], partner=partner, sees_programs=False)
    return Scope(program_ids=program_ids(snap, program_codes), partner=None)
