"""Helpers shared by the finance tests (test_ledger*, test_periods*, test_finance*)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text

from service.kit.db.engine import driver, new_session, transaction
from service.ledger import service as ledger

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
    sku: str = "ARAY-CINEMA-2000",
    program: str = "mobile-bonus",
    last4: str | None = "0001",
) -> int:
    """An issue record of a product, written by the ledger's own writer (a redemption's record
    without the redemption), for tests that need records at chosen times."""
    with transaction() as s:
        program_id, product_id, partner_id, currency, face, cost = s.execute(
            text(
                "SELECT pg.id, p.id, p.partner_id, p.currency, p.face_value_minor, p.cost_price_minor"
                " FROM products p, programs pg WHERE p.sku = :sku AND pg.code = :program"
            ),
            {"sku": sku, "program": program},
        ).one()
        return ledger.write_record(
            driver(s),
            ledger.RecordType.ISSUE,
            ledger.Record(
                occurred_at=occurred_at,
                program_id=program_id,
                tariff_id=None,
                offer_id=None,
                product_id=product_id,
                sku=sku,
                partner_id=partner_id,
                currency=currency,
                face_value_minor=face,
                cost_minor=cost,
                vat_rate_bp=1600,
                code_fingerprint=uuid.uuid4().bytes * 2,
                code_last4=last4,
            ),
        )


def record_sums(program: str = "mobile-bonus", booked: str | None = None) -> dict[str, int]:
    sql = (
        "SELECT count(*), coalesce(sum(quantity), 0), coalesce(sum(face_value_minor), 0),"
        " coalesce(sum(cost_minor), 0), coalesce(sum(vat_minor), 0) FROM reconciliation_records r"
        " JOIN programs p ON p.id = r.program_id WHERE p.code = :program"
        + (" AND to_char(r.booked_period, 'YYYY-MM') = :booked" if booked else "")
    )
    with new_session() as s:
        row = s.execute(text(sql), {"program": program, "booked": booked}).one()
    names = ("records", "quantity", "face_value_minor", "cost_minor", "vat_minor")
    return dict(zip(names, map(int, row), strict=True))


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
