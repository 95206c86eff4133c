"""Partner settlement: what we owe a partner for a month, summed from the reconciliation records
alone (the same lines finance exports and closes periods with), so the figures always add up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from service.catalog.snapshot import get_snapshot
from service.kit.http.errors import NotFound
from service.kit.values.money import Money
from service.settlements.schemas import ProductSettlement, SettlementLine, SettlementOut, SettlementTotals

DEFAULT_TIMEZONE = "Asia/Almaty"  # records without a program fall in the first customer's zone


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """Local (naive) start of the month and of the next one."""
    year, month = (int(part) for part in period.split("-"))
    start = date(year, month, 1)
    end = date(year + month // 12, month % 12 + 1, 1)
    return datetime.combine(start, datetime.min.time()), datetime.combine(end, datetime.min.time())


def _line(count: int, face: int, cost: int, currency: str) -> SettlementLine:
    return SettlementLine(count=count, face_value=Money.of(face, currency), cost=Money.of(cost, currency))


def settlement(session: Session, partner_code: str, period: str) -> SettlementOut:
    partner = (
        session.connection()
        .exec_driver_sql("SELECT id, name FROM partners WHERE code = %(code)s", {"code": partner_code})
        .one_or_none()
    )
    if partner is None:
        raise NotFound(f"partner {partner_code} not found")
    start, end = month_bounds(period)
    # The UTC range, widened by a day each side, lets the index narrow the scan; the local month in
    # each record's program zone decides.
    rows = (
        session.connection()
        .exec_driver_sql(
            "SELECT r.product_id, r.currency,"
            " sum(r.quantity) FILTER (WHERE r.type IN ('issue', 'cancel')) AS issued,"
            " sum(r.face_value_minor) FILTER (WHERE r.type IN ('issue', 'cancel')) AS issued_face,"
            " sum(r.cost_minor) FILTER (WHERE r.type IN ('issue', 'cancel')) AS issued_cost,"
            " sum(r.quantity) FILTER (WHERE r.type = 'exchange') AS exchanged,"
            " sum(r.face_value_minor) FILTER (WHERE r.type = 'exchange') AS exchanged_face,"
            " sum(r.cost_minor) FILTER (WHERE r.type = 'exchange') AS exchanged_cost,"
            " sum(r.quantity) FILTER (WHERE r.type = 'exchange' AND r.channel = 'online') AS online,"
            " sum(r.face_value_minor) FILTER (WHERE r.type = 'exchange' AND r.channel = 'online')"
            "  AS online_face,"
            " sum(r.cost_minor) FILTER (WHERE r.type = 'exchange' AND r.channel = 'online') AS online_cost,"
            " count(*) AS records"
            " FROM reconciliation_records r LEFT JOIN programs p ON p.id = r.program_id"
            " WHERE r.partner_id = %(partner)s AND r.occurred_at >= %(lo)s AND r.occurred_at < %(hi)s"
            "   AND (r.occurred_at AT TIME ZONE coalesce(p.timezone, %(zone)s)) >= %(start)s"
            "   AND (r.occurred_at AT TIME ZONE coalesce(p.timezone, %(zone)s)) < %(end)s"
            " GROUP BY r.product_id, r.currency",
            {
                "partner": partner.id,
                "zone": DEFAULT_TIMEZONE,
                "start": start,
                "end": end,
                "lo": start.replace(tzinfo=UTC) - timedelta(days=1),
                "hi": end.replace(tzinfo=UTC) + timedelta(days=1),
            },
        )
        .all()
    )
    snap = get_snapshot(session)
    sums: dict[tuple[int, str], Any] = {(row.product_id, row.currency): row for row in rows}
    for product in snap.products.values():  # every product of the partner, zero when nothing happened
        if product.partner_id == partner.id and product.kind == "code":
            sums.setdefault((product.id, product.currency), None)
    products: list[ProductSettlement] = []
    totals: dict[str, list[int]] = {}
    for (product_id, currency), row in sums.items():
        product = snap.products[product_id]
        n = [
            int(getattr(row, f) or 0) if row is not None else 0
            for f in (
                "issued",
                "issued_face",
                "issued_cost",
                "exchanged",
                "exchanged_face",
                "exchanged_cost",
                "online",
                "online_face",
                "online_cost",
            )  # fmt: skip
        ]
        products.append(
            ProductSettlement(
                sku=product.sku,
                name=product.name,
                currency=currency,
                issued=_line(n[0], n[1], n[2], currency),
                exchanged=_line(n[3], n[4], n[5], currency),
                exchanged_online=_line(n[6], n[7], n[8], currency),
                cost_to_pay=Money.of(n[2] + n[5], currency),
            )
        )
        total = totals.setdefault(currency, [0] * 9)
        for i, value in enumerate(n):
            total[i] += value
    products.sort(key=lambda p: (p.sku, p.currency))
    return SettlementOut(
        partner=partner_code,
        name=partner.name,
        period=period,
        products=products,
        totals=[
            SettlementTotals(
                currency=c,
                issued=_line(t[0], t[1], t[2], c),
                exchanged=_line(t[3], t[4], t[5], c),
                exchanged_online=_line(t[6], t[7], t[8], c),
                cost_to_pay=Money.of(t[2] + t[5], c),
            )
            for c, t in sorted(totals.items())
        ],
        records=sum(int(row.records) for row in rows),
    )
