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

from service.kit.db.engine import scalar
from service.kit.db.fragments import Fragment


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


_FIELDS = (
    "type", "occurred_at", "program", "tariff", "offer", "product", "sku", "partner", "currency", "face",
    "cost", "rate", "vat", "fingerprint", "last4", "card",
)  # fmt: skip


@lru_cache
def _values_sql(redemption_id: str, prefix: str) -> str:
    """The VALUES list in column order, with `prefix`-named placeholders (built once per use: the
    statement text is then the same string object every time, hashed once)."""
    p = {name: f"%({prefix}{name})s" for name in _FIELDS}
    return (
        f"{p['type']}, {p['occurred_at']}, {p['program']}, {p['tariff']}, {p['offer']}, {p['product']},"
        f" {p['sku']}, {p['partner']}, 1, {p['currency']}, {p['face']}, {p['cost']}, {p['rate']}, {p['vat']},"
        f" {p['fingerprint']}, {p['last4']}, {redemption_id}, {p['card']}"
    )


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


@lru_cache
def _insert_from(source: str, redemption_id: str, prefix: str) -> str:
    return f"{_INSERT} SELECT {_values_sql(redemption_id, prefix)} FROM {source}"


# What the CTE of a redemption's statement returns for its issue record (see issue_record).
REDEMPTION_RETURNING = ", ".join(
    ("id", "created_at", "program_id", "tariff_id", "offer_id", "product_id", "currency", "nominal_minor")
    + ("reward_last4", "card_id")
)


@lru_cache
def _issue_sql(redemption_from: str, reward_from: str, prefix: str) -> str:
    r, c, p = redemption_from, reward_from, prefix
    return (
        f"{_INSERT} SELECT 'issue', {r}.created_at, {r}.program_id, {r}.tariff_id, {r}.offer_id,"
        f" {r}.product_id, %({p}sku)s, %({p}partner)s, 1, {r}.currency, {r}.nominal_minor, %({p}cost)s,"
        f" %({p}rate)s, %({p}vat)s, {c}.fingerprint, {r}.reward_last4, {r}.id, {r}.card_id FROM {r}, {c}"
    )


def issue_record(
    *,
    redemption_from: str,
    reward_from: str,
    sku: str,
    partner_id: int | None,
    nominal_minor: int,
    cost_minor: int,
    vat_rate_bp: int,
    prefix: str = "rec_",
) -> Fragment:
    """The issue record of the redemption that the CTE `redemption_from` inserted (RETURNING
    REDEMPTION_RETURNING) for the reward of the CTE `reward_from` (RETURNING its `fingerprint`), as an
    INSERT for the redemption's own statement: its time, catalog ids, currency, face value and last 4
    come from the redemption row, so the statement carries each value once; no redemption row, no
    record."""
    params = {
        f"{prefix}sku": sku,
        f"{prefix}partner": partner_id,
        f"{prefix}cost": cost_minor,
        f"{prefix}rate": vat_rate_bp,
        f"{prefix}vat": vat_included(nominal_minor, vat_rate_bp),
    }
    return Fragment(_issue_sql(redemption_from, reward_from, prefix), params)


@lru_cache
def _exchange_sql(source: str, prefix: str) -> str:
    return (
        f"INSERT INTO reconciliation_records ({_COLUMNS}, channel)"
        f" SELECT {_values_sql('NULL', prefix)}, %({prefix}channel)s FROM {source}"
    )


def exchange_record(
    record: Record, *, exchange_from: str, channel: str = "partner", prefix: str = "rec_"
) -> Fragment:
    """The exchange record of the exchange that the CTE `exchange_from` inserted, as an INSERT for the
    exchange's own statement; `channel` says where it happened (`partner` desk or `online` page)."""
    params = _params(RecordType.EXCHANGE, record, prefix)
    params[f"{prefix}channel"] = channel
    return Fragment(_exchange_sql(exchange_from, prefix), params)


def write_record(db: Any, type_: RecordType, record: Record) -> int:
    """A record in a statement of its own, not tied to a redemption; returns its id."""
    sql = f"{_INSERT} VALUES ({_values_sql('NULL', '')}) RETURNING id"
    return int(scalar(db.execute(sql, _params(type_, record, "")).fetchone()))


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
