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
from typing import Any

from service.db import scalar
from service.sql import Fragment


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


_COLUMNS = (
    "type, occurred_at, program_id, tariff_id, offer_id, product_id, sku, partner_id, quantity, currency,"
    " face_value_minor, cost_minor, vat_rate_bp, vat_minor, code_fingerprint, code_last4, redemption_id,"
    " card_id"
)
_INSERT = f"INSERT INTO reconciliation_records ({_COLUMNS})"


def _values(type_: RecordType, record: Record, redemption_id: str, prefix: str) -> Fragment:
    params: dict[str, Any] = {
        "type": type_.value,
        "occurred_at": record.occurred_at,
        "program": record.program_id,
        "tariff": record.tariff_id,
        "offer": record.offer_id,
        "product": record.product_id,
        "sku": record.sku,
        "partner": record.partner_id,
        "currency": record.currency,
        "face": record.face_value_minor,
        "cost": record.cost_minor,
        "rate": record.vat_rate_bp,
        "vat": record.vat_minor,
        "fingerprint": record.code_fingerprint,
        "last4": record.code_last4,
        "card": record.card_id,
    }
    p = {name: f"%({prefix}{name})s" for name in params}
    sql = (
        f"{p['type']}, {p['occurred_at']}, {p['program']}, {p['tariff']}, {p['offer']}, {p['product']},"
        f" {p['sku']}, {p['partner']}, 1, {p['currency']}, {p['face']}, {p['cost']}, {p['rate']}, {p['vat']},"
        f" {p['fingerprint']}, {p['last4']}, {redemption_id}, {p['card']}"
    )
    return Fragment(sql, {prefix + name: value for name, value in params.items()})


def issue_record(record: Record, *, redemption_from: str, prefix: str = "rec_") -> Fragment:
    """The issue record of the redemption that the CTE `redemption_from` inserted (its `id`), as an
    INSERT for the redemption's own statement: no redemption row, no record."""
    values = _values(RecordType.ISSUE, record, f"{redemption_from}.id", prefix)
    return Fragment(f"{_INSERT} SELECT {values.sql} FROM {redemption_from}", values.params)


def exchange_record(record: Record, *, exchange_from: str, prefix: str = "rec_") -> Fragment:
    """The exchange record of the exchange that the CTE `exchange_from` inserted, as an INSERT for the
    exchange's own statement."""
    values = _values(RecordType.EXCHANGE, record, "NULL", prefix)
    return Fragment(f"{_INSERT} SELECT {values.sql} FROM {exchange_from}", values.params)


def write_record(db: Any, type_: RecordType, record: Record) -> int:
    """A record in a statement of its own, not tied to a redemption; returns its id."""
    values = _values(type_, record, "NULL", "")
    return int(scalar(db.execute(f"{_INSERT} VALUES ({values.sql}) RETURNING id", values.params).fetchone()))


def write_breakage(db: Any, record: Record) -> None:
    """The unused balance of an expired card, lost to its holder."""
    write_record(db, RecordType.BREAKAGE, record)


def write_reversal(db: Any, redemption_id: uuid.UUID, *, occurred_at: datetime) -> int:
    """The cancel record of a redemption: its issue record with opposite signs. Returns how many issue
    records it reversed (exactly one, by invariant 4; the caller refuses anything else)."""
    return db.execute(
        f"{_INSERT} SELECT 'cancel', %(now)s, program_id, tariff_id, offer_id, product_id, sku, partner_id,"
        " -1, currency, -face_value_minor, -cost_minor, vat_rate_bp, -vat_minor, code_fingerprint,"
        " code_last4, redemption_id, card_id"
        " FROM reconciliation_records WHERE redemption_id = %(id)s AND type = 'issue'",
        {"id": redemption_id, "now": occurred_at},
    ).rowcount
