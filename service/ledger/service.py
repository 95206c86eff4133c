"""Writing reconciliation records: the only code that inserts them.

A record is written in the same transaction as its business event, and never changed: a correction
is a new record with opposite signs. The issue and exchange records are written by the statement
that writes their event (a redemption, an exchange), so a redemption stays one round trip: those
writers return an SQL fragment and its parameters for the caller's statement, not a statement of
their own. VAT is VAT-inclusive (Kazakh retail prices include it)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from psycopg import Connection
from psycopg.rows import scalar_row

from service.kit.db.engine import one
from service.kit.db.fragments import Fragment
from service.ledger.sql import load


class RecordType(StrEnum):
    ISSUE = "issue"
    CANCEL = "cancel"
    EXCHANGE = "exchange"
    BREAKAGE = "breakage"


def vat_included(gross_minor: int, rate_bp: int) -> int:
    """VAT inside a VAT-inclusive amount, rounded half up to the minor unit, in integers only."""
    if rate_bp <= 0 or gross_minor == 0:
        return 0
    sign = -1 if gross_minor < 0 else 1
    numerator = abs(gross_minor) * rate_bp * 2
    denominator = (10_000 + rate_bp) * 2
    return sign * ((numerator + denominator // 2) // denominator)


@dataclass(frozen=True)
class Record:
    """One accounting line of a business event, before it is written. Amounts in minor units; the VAT
    is computed from the face value and the rate."""

    occurred_at: datetime
    program_id: int | None
    tariff_id: int | None
    offer_id: int | None
    product_id: int
    sku: str
    partner_id: int | None
    currency: str
    face_value_minor: int
    cost_minor: int
    vat_rate_bp: int
    code_fingerprint: bytes | None
    code_last4: str | None
    card_id: int | None = None

    @property
    def vat_minor(self) -> int:
        return vat_included(self.face_value_minor, self.vat_rate_bp)


_FIELDS = (
    "type", "occurred_at", "program", "tariff", "offer", "product", "sku", "partner", "currency", "face",
    "cost", "rate", "vat", "fingerprint", "last4", "card",
)  # fmt: skip


def _params(type_: RecordType, record: Record, prefix: str) -> dict[str, Any]:
    r = record
    values = (
        type_.value, r.occurred_at, r.program_id, r.tariff_id, r.offer_id, r.product_id, r.sku, r.partner_id,
        r.currency, r.face_value_minor, r.cost_minor, r.vat_rate_bp, r.vat_minor, r.code_fingerprint,
        r.code_last4, r.card_id,
    )  # fmt: skip
    return dict(zip(_prefixed(prefix), values, strict=True))


@lru_cache
def _prefixed(prefix: str) -> tuple[str, ...]:
    return tuple(prefix + name for name in _FIELDS)


ISSUE_RECORD = load("issue_record")
EXCHANGE_RECORD = load("exchange_record")
WRITE_RECORD = load("write_record")
WRITE_REVERSAL = load("write_reversal")


# What the CTE of a redemption's statement returns for its issue record (see issue_record).
REDEMPTION_RETURNING = ", ".join(
    ("id", "created_at", "program_id", "tariff_id", "offer_id", "product_id", "currency", "nominal_minor")
    + ("reward_last4", "card_id", "campaign_id")
)


def issue_record(
    *, sku: str, partner_id: int | None, nominal_minor: int, cost_minor: int, vat_rate_bp: int
) -> Fragment:
    """The issue record of the redemption that the CTE `r` of a redemption's statement inserted
    (RETURNING REDEMPTION_RETURNING) for the reward of its CTE `c` (RETURNING its `fingerprint`), as an
    INSERT for that statement (sql/issue_record.sql): its time, catalog ids, currency, face value and
    last 4 come from the redemption row, so the statement carries each value once; no redemption row,
    no record. Its parameters are named `rec_*`."""
    params = {
        "rec_sku": sku,
        "rec_partner": partner_id,
        "rec_cost": cost_minor,
        "rec_rate": vat_rate_bp,
        "rec_vat": vat_included(nominal_minor, vat_rate_bp),
    }
    return Fragment(ISSUE_RECORD, params)


def exchange_record(record: Record, *, channel: str = "partner") -> Fragment:
    """The exchange record of the exchange that the CTE `e` of an exchange's statement inserted, as an
    INSERT for that statement (sql/exchange_record.sql, parameters named `rec_*`); `channel` says where
    it happened (`partner` desk or `online` page)."""
    params = _params(RecordType.EXCHANGE, record, "rec_")
    params["rec_channel"] = channel
    return Fragment(EXCHANGE_RECORD, params)


def write_record(db: Connection[Any], type_: RecordType, record: Record) -> int:
    """A record in a statement of its own, not tied to a redemption; returns its id."""
    return int(
        one(db.cursor(row_factory=scalar_row).execute(WRITE_RECORD, _params(type_, record, "")).fetchone())
    )


def write_breakage(db: Connection[Any], record: Record) -> None:
    """The unused balance of an expired card, lost to its holder."""
    write_record(db, RecordType.BREAKAGE, record)


def write_reversal(db: Connection[Any], redemption_id: uuid.UUID, *, occurred_at: datetime) -> int:
    """The cancel record of a redemption: its issue record with opposite signs. Returns how many issue
    records it reversed (exactly one, by invariant 4; the caller refuses anything else)."""
    return db.execute(WRITE_REVERSAL, {"id": redemption_id, "now": occurred_at}).rowcount
