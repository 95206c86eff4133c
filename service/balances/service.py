"""Budget and stock balances: what each program has spent this month (program_budget_usage, kept by
the redemptions), the codes available per sku, and the low-budget and low-stock webhook events.

The events come from a periodic check (the workers' housekeeping, every minute), not from the
redemption path, which stays as it is. Each balance's last state (low or not) is a row of
`balance_alerts`; the check flips it with one INSERT ... ON CONFLICT DO UPDATE ... WHERE the state
differs, and writes the events in that same transaction: however many workers check at once, one
of them flips it, and an event goes out once per crossing (again only after the balance has been back
above its threshold)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import structlog
from psycopg import Connection
from psycopg.rows import class_row, scalar_row

from service.events import webhooks
from service.kit.config import get_settings
from service.kit.db.engine import driver, one, transaction
from service.kit.values.money import Money
from service.kit.values.zones import zone

log = structlog.get_logger("balances")
CHECK_LOCK = 7270019  # one worker checks at a time; the others skip that minute


@dataclass(frozen=True)
class Budget:
    program_id: int
    program: str
    currency: str
    month: date  # the program's current month, in its time zone
    budget_minor: int
    spent_minor: int

    @property
    def remaining_minor(self) -> int:
        return max(self.budget_minor - self.spent_minor, 0)


# The programs' budgets and what each spent this month, in its own time zone: one row per program.
BUDGETS = (
    "SELECT p.id, p.code, p.currency, p.timezone, p.monthly_budget_minor, coalesce(u.spent_minor, 0)"
    " FROM programs p LEFT JOIN program_budget_usage u ON u.program_id = p.id"
    " AND u.month = (date_trunc('month', %(now)s AT TIME ZONE p.timezone))::date"
    " WHERE p.active AND p.monthly_budget_minor IS NOT NULL"
)


# What the sandbox "spent" this month: its redemptions take no budget, so nothing is kept for them;
# a sandbox key's figures are summed from its world's redemptions (few; a partial index of 0015).
SANDBOX_BUDGETS = (
    "SELECT p.id, p.code, p.currency, p.timezone, p.monthly_budget_minor, coalesce(("
    "  SELECT sum(r.nominal_minor) FROM redemptions r WHERE r.program_id = p.id AND r.sandbox"
    "  AND r.status <> 'cancelled'"
    "  AND r.created_at >= date_trunc('month', %(now)s AT TIME ZONE p.timezone) AT TIME ZONE p.timezone"
    " ), 0)::bigint FROM programs p WHERE p.active AND p.monthly_budget_minor IS NOT NULL"
)


def budgets(
    db: Connection[Any], now: datetime, *, program: str | None = None, sandbox: bool = False
) -> list[Budget]:
    """Each program's budget and what it spent this month; `sandbox`: what the sandbox's redemptions
    would have spent (the sandbox world's figures, which never touch the real ones)."""
    rows = db.execute(
        (SANDBOX_BUDGETS if sandbox else BUDGETS)
        + (" AND p.code = %(program)s" if program else "")
        + " ORDER BY p.code",
        {"now": now, "program": program},
    ).fetchall()
    return [
        Budget(
            pid,
            code,
            currency,
            now.astimezone(zone(zone_name)).date().replace(day=1),
            budget,
            spent,
        )
        for pid, code, currency, zone_name, budget, spent in rows
    ]


@dataclass(frozen=True)
class Stock:
    product_id: int
    sku: str
    partner: str | None
    available: int
    threshold: int


# Available codes per code product: one index-only range of ix_codes_allocation per product.
STOCK = (
    "SELECT p.id AS product_id, p.sku, pa.code AS partner, (SELECT count(*) FROM codes c"
    "  WHERE c.product_id = p.id AND c.status = 'available' AND coalesce(c.expires_at, 'infinity') > %(now)s)"
    " AS available, coalesce(p.low_stock_threshold, %(threshold)s) AS threshold"
    " FROM products p LEFT JOIN partners pa ON pa.id = p.partner_id"
    " WHERE p.kind = 'code' AND p.active ORDER BY p.sku"
)


def stock(db: Connection[Any], now: datetime) -> list[Stock]:
    return (
        db.cursor(row_factory=class_row(Stock))
        .execute(STOCK, {"now": now, "threshold": get_settings().stock_low_threshold})
        .fetchall()
    )


def _flip(db: Connection[Any], kind: str, subject: str, period: str, low: bool, now: datetime) -> bool:
    """Records the state; True when this call turned it low (a first sighting counts: not low
    before)."""
    # No row: the state did not change (the WHERE of the DO UPDATE).
    low_now: bool | None = (
        db.cursor(row_factory=scalar_row)
        .execute(
            "INSERT INTO balance_alerts AS a (kind, subject, period, low, changed_at)"
            " VALUES (%(kind)s, %(subject)s, %(period)s, %(low)s, %(now)s)"
            " ON CONFLICT (kind, subject, period)"
            " DO UPDATE SET low = EXCLUDED.low, changed_at = EXCLUDED.changed_at WHERE a.low <> EXCLUDED.low"
            " RETURNING low",
            {"kind": kind, "subject": subject, "period": period, "low": low, "now": now},
        )
        .fetchone()
    )
    return low_now is True


@dataclass(frozen=True)
class BalanceCheck:
    """The events a balance check wrote, per kind."""

    stock_low: int = 0  # `stock.low` events (one per program that offers the product)
    budget_low: int = 0  # `budget.low` events

    def by_event(self) -> dict[str, int]:
        """The counts keyed by event type, as housekeeping logs them."""
        return {"stock.low": self.stock_low, "budget.low": self.budget_low}


def check_balances(now: datetime | None = None) -> BalanceCheck:
    """Sends `stock.low` and `budget.low` for balances that crossed their threshold since the last
    check. Returns the events written per kind."""
    now = now or datetime.now(UTC)
    percent = get_settings().budget_low_percent
    stock_low = budget_low = 0
    with transaction() as session:
        db = driver(session)
        if not one(
            db.cursor(row_factory=scalar_row)
            .execute("SELECT pg_try_advisory_xact_lock(%(key)s)", {"key": CHECK_LOCK})
            .fetchone()
        ):
            return BalanceCheck()
        for line in stock(db, now):
            if not _flip(db, "stock", line.sku, "", line.available < line.threshold, now):
                continue
            programs = db.execute(
                "SELECT DISTINCT pr.id, pr.webhook_url FROM offers o JOIN programs pr ON pr.id = o.program_id"
                " WHERE o.product_id = %(product_id)s AND o.active AND pr.active ORDER BY pr.id",
                {"product_id": line.product_id},
            ).fetchall()
            data = {
                "sku": line.sku,
                "partner": line.partner,
                "available": line.available,
                "threshold": line.threshold,
            }
            webhooks.emit_many(
                db, [webhooks.Event(pid, url, None, "stock.low", data) for pid, url in programs], now=now
            )
            stock_low += len(programs)
            log.warning("stock_low", sku=line.sku, available=line.available, threshold=line.threshold)
        urls = dict(db.execute("SELECT id, webhook_url FROM programs").fetchall())
        for budget in budgets(db, now):
            low = budget.spent_minor * 100 >= budget.budget_minor * percent
            if not _flip(db, "budget", budget.program, f"{budget.month:%Y-%m}", low, now):
                continue
            webhooks.emit(
                db,
                program_id=budget.program_id,
                webhook_url=urls.get(budget.program_id),
                redemption_id=None,
                event="budget.low",
                now=now,
                data={
                    "program": budget.program,
                    "month": f"{budget.month:%Y-%m}",
                    "budget": Money.of(budget.budget_minor, budget.currency).model_dump(mode="json"),
                    "spent": Money.of(budget.spent_minor, budget.currency).model_dump(mode="json"),
                    "remaining": Money.of(budget.remaining_minor, budget.currency).model_dump(mode="json"),
                    "threshold_percent": percent,
                },
            )
            budget_low += 1
            log.warning("budget_low", program=budget.program, spent_minor=budget.spent_minor)
    return BalanceCheck(stock_low=stock_low, budget_low=budget_low)
