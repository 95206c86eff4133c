"""Helpers shared by the finance tests (test_ledger*, test_periods*, test_finance*)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text

from service.db import new_session, transaction

ALMATY = ZoneInfo("Asia/Almaty")


def almaty(*args: int) -> datetime:
    return datetime(*args, tzinfo=ALMATY)


def redeem_at(
    now: datetime,
    *,
    offer: str = "cinema-2000",
    tariff: str = "basic",
    points: int = 2000,
    program: str = "mobile-bonus",
    msisdn: str | None = None,
) -> uuid.UUID:
    """An issue through the real redemption function, at a chosen time."""
    from service.redemptions.schemas import RedemptionIn
    from service.redemptions.service import Scope, redeem

    with transaction() as session:
        out = redeem(
            session,
            RedemptionIn(
                program=program,
                tariff=tariff,
                offer=offer,
                points=points,
                msisdn=msisdn or f"8701{uuid.uuid4().int % 10_000_000:07d}",
                external_id=f"fin-{uuid.uuid4().hex}",
            ),
            scope=Scope(None),
            api_key_id=None,
            now=now,
        )
    return out.id


def cancel_at(redemption_id: uuid.UUID, now: datetime) -> None:
    from service.redemptions.service import Scope, cancel

    with transaction() as session:
        cancel(session, redemption_id, scope=Scope(None), now=now)


def insert_record(
    *,
    occurred_at: datetime,
    type: str = "issue",
    sku: str = "ARAY-CINEMA-2000",
    program: str = "mobile-bonus",
    quantity: int = 1,
    face: int = 200000,
    cost: int = 180000,
    rate_bp: int = 1600,
    vat: int = 27586,
    last4: str | None = "0001",
    fingerprint: bytes | None = None,
) -> int:
    """A record written with an explicit column list, the way every writer does (no booked_period)."""
    with transaction() as s:
        return s.execute(
            text(
                "INSERT INTO reconciliation_records (type, occurred_at, program_id, product_id, sku, partner_id,"
                " quantity, currency, face_value_minor, cost_minor, vat_rate_bp, vat_minor, code_fingerprint, code_last4)"
                " SELECT :type, :at, pg.id, p.id, p.sku, p.partner_id, :q, p.currency, :face, :cost, :rate, :vat, :fp, :last4"
                " FROM products p, programs pg WHERE p.sku = :sku AND pg.code = :program RETURNING id"
            ),
            {
                "type": type,
                "at": occurred_at,
                "sku": sku,
                "program": program,
                "q": quantity,
                "face": face,
                "cost": cost,
                "rate": rate_bp,
                "vat": vat,
                "fp": fingerprint or uuid.uuid4().bytes * 2,
                "last4": last4,
            },
        ).scalar_one()


def record_sums(program: str = "mobile-bonus", booked: str | None = None) -> dict[str, int]:
    sql = (
        "SELECT count(*), coalesce(sum(quantity), 0), coalesce(sum(face_value_minor), 0),"
        " coalesce(sum(cost_minor), 0), coalesce(sum(vat_minor), 0) FROM reconciliation_records r"
        " JOIN programs p ON p.id = r.program_id WHERE p.code = :program"
        + (" AND to_char(r.booked_period, 'YYYY-MM') = :booked" if booked else "")
    )
    with new_session() as s:
        row = s.execute(text(sql), {"program": program, "booked": booked}).one()
    return dict(zip(("records", "quantity", "face_value_minor", "cost_minor", "vat_minor"), map(int, row)))


def booked_periods() -> dict[int, str]:
    with new_session() as s:
        return dict(
            s.execute(text("SELECT id, to_char(booked_period, 'YYYY-MM') FROM reconciliation_records")).all()
        )


def parse_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def minor(decimal_text: str) -> int:
    """'2000.00' -> 200000, '-275.86' -> -27586, without floats."""
    sign = -1 if decimal_text.startswith("-") else 1
    whole, _, frac = decimal_text.lstrip("-").partition(".")
    return sign * (int(whole) * 100 + int((frac + "00")[:2]))


def now_utc() -> datetime:
    return datetime.now(UTC)
