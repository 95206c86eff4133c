"""Month close per program.

1. A short transaction takes the program's period lock exclusively (every record insert takes it
   shared, in the booking trigger), so in-flight writers finish first and later ones see the period
   closed and book into the next open month. It inserts the period as `closing` with its document
   numbers (gapless, under a numbering lock) and commits.
2. A second transaction, under a per-period lock, freezes the totals from the records booked into
   the period (nothing can be booked into it any more), numbers its records in the program's registry
   (number_records: gapless per program, under the program's registry lock), writes the registry
   (CSV and XLSX) and the
   act (PDF), stores them in the database in 1 MiB chunks with their SHA-256, and marks it `closed`.
   If it fails, the next close of the same month finishes it; closing a closed month returns the
   stored documents unchanged. A trigger forbids reopening, deleting or changing a closed period.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

import orjson

from service.catalog.errors import UnknownProgram
from service.events import webhooks
from service.kit.db.engine import driver, new_session, scalar, transaction
from service.kit.values.money import to_decimal_string
from service.kit.values.zones import zone
from service.ledger.documents import month_title_ru, render_act
from service.ledger.errors import PeriodNotClosed, PeriodNotEnded
from service.ledger.exports import RecordFilter, iter_csv, write_xlsx
from service.ledger.models import PERIOD_LOCK

DOCS_LOCK = PERIOD_LOCK + 1
REGISTRY_LOCK = PERIOD_LOCK + 2  # (REGISTRY_LOCK, program id): the program's registry numbering
NUMBERING_KEY = 0  # (PERIOD_LOCK, 0): program ids start at 1
CHUNK = 1 << 20
KINDS = {
    "act.pdf": ("application/pdf", "act"),
    "registry.xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "registry"),
    "registry.csv": ("text/csv; charset=utf-8", "registry"),
}


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def month_end(month: date, zone: ZoneInfo) -> datetime:
    """The first instant after the month in the program's time zone, in UTC."""
    nxt = next_month(month)
    return datetime(nxt.year, nxt.month, 1, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class ProgramRow:
    id: int
    code: str
    name: str
    timezone: str
    currency: str

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)


def find_program(db: Any, code: str) -> ProgramRow:
    row = db.execute(
        "SELECT id, code, name, timezone, currency FROM programs WHERE code = %s", (code,)
    ).fetchone()
    if row is None:
        raise UnknownProgram(f"no program {code}")
    return ProgramRow(*row)


# --- totals --------------------------------------------------------------------------------------


def compute_totals(db: Any, program_id: int, month: date) -> dict[str, Any]:
    """Sums of the records booked into the period, per product and VAT rate, per type, per currency.
    Integers (minor units) only."""
    params = {"p": program_id, "m": month}
    by_product = []
    for row in db.execute(
        "SELECT r.sku, pr.name, pa.code, pa.name, r.currency, r.vat_rate_bp, count(*), sum(r.quantity),"
        " sum(r.face_value_minor), sum(r.cost_minor), sum(r.vat_minor)"
        " FROM reconciliation_records r JOIN products pr ON pr.id = r.product_id"
        " LEFT JOIN partners pa ON pa.id = r.partner_id"
        " WHERE r.program_id = %(p)s AND r.booked_period = %(m)s"
        " GROUP BY r.sku, pr.name, pa.code, pa.name, r.currency, r.vat_rate_bp"
        " ORDER BY r.sku, r.currency, r.vat_rate_bp",
        params,
    ):
        by_product.append(
            {
                "sku": row[0],
                "name": row[1],
                "partner": row[2],
                "partner_name": row[3],
                "currency": row[4],
                "vat_rate_bp": row[5],
                "records": row[6],
                "quantity": int(row[7]),
                "face_value_minor": int(row[8]),
                "cost_minor": int(row[9]),
                "vat_minor": int(row[10]),
            }
        )
    by_type = []
    for row in db.execute(
        "SELECT type, currency, count(*), sum(quantity), sum(face_value_minor), sum(cost_minor),"
        " sum(vat_minor) FROM reconciliation_records WHERE program_id = %(p)s AND booked_period = %(m)s"
        " GROUP BY type, currency"
        " ORDER BY array_position(ARRAY['issue','cancel','exchange','breakage'], type), currency",
        params,
    ):
        by_type.append(
            {
                "type": row[0],
                "currency": row[1],
                "records": row[2],
                "quantity": int(row[3]),
                "face_value_minor": int(row[4]),
                "cost_minor": int(row[5]),
                "vat_minor": int(row[6]),
            }
        )
    by_currency: dict[str, dict[str, int]] = {}
    for line in by_product:
        t = by_currency.setdefault(
            line["currency"],
            {"records": 0, "quantity": 0, "face_value_minor": 0, "cost_minor": 0, "vat_minor": 0},
        )
        for key in t:
            t[key] += line[key]
    late = db.execute(
        "SELECT count(*) FROM reconciliation_records r JOIN programs p ON p.id = r.program_id"
        " WHERE r.program_id = %(p)s AND r.booked_period = %(m)s"
        " AND date_trunc('month', r.occurred_at AT TIME ZONE p.timezone)::date <> r.booked_period",
        params,
    ).fetchone()[0]
    return {
        "records": sum(line["records"] for line in by_product),
        "by_currency": by_currency,
        "by_product": by_product,
        "by_type": by_type,
        "late_records": late,
    }


# --- closing -------------------------------------------------------------------------------------


def close_period(
    program_code: str, month: date, *, now: datetime | None = None, closed_by: str | None = None
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    with transaction() as session:
        db = driver(session)
        program = find_program(db, program_code)
        end = month_end(month, program.zone)
        if now < end:
            raise PeriodNotEnded(
                f"{month:%Y-%m} ends at {end.astimezone(program.zone).isoformat()} in {program.timezone}",
            )
        db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (PERIOD_LOCK, program.id))
        period_id = db.execute(
            "SELECT id FROM periods WHERE program_id = %s AND month = %s", (program.id, month)
        ).fetchone()
        if period_id is None:
            db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (PERIOD_LOCK, NUMBERING_KEY))
            number = scalar(db.execute("SELECT coalesce(max(number), 0) + 1 FROM periods").fetchone())
            period_id = db.execute(
                "INSERT INTO periods (program_id, month, status, number, act_number, registry_number,"
                " closed_at, closed_by) VALUES (%s, %s, 'closing', %s, %s, %s, %s, %s) RETURNING id",
                (program.id, month, number, f"A-{number:06d}", f"R-{number:06d}", now, closed_by),
            ).fetchone()
    _produce_documents(scalar(period_id), program)
    return period_view(program_code, month)


def _store(db: Any, period_id: int, kind: str, number: str, filename: str, fh: IO[bytes]) -> tuple[int, str]:
    fh.seek(0)
    digest = hashlib.sha256()
    size = 0
    # size and hash first (the row is immutable once written), then the chunks
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    fh.seek(0)
    document_id = db.execute(
        "INSERT INTO period_documents (period_id, kind, number, filename, content_type, size, sha256)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (period_id, kind, number, filename, KINDS[kind][0], size, digest.hexdigest()),
    ).fetchone()[0]
    seq = 0
    while chunk := fh.read(CHUNK):
        db.execute(
            "INSERT INTO period_document_chunks (document_id, seq, data) VALUES (%s, %s, %s)",
            (document_id, seq, chunk),
        )
        seq += 1
    return size, digest.hexdigest()


# Numbers the period's records after the program's last number, in registry order. Only committed
# records exist for it (the period is closed to new bookings), so a number is never drawn for a
# request that is then refused, and it rolls back with the documents if they fail.
_NUMBER_RECORDS = """
INSERT INTO registry_entries (record_id, program_id, period_id, number)
SELECT r.id, r.program_id, %(period)s,
       (SELECT coalesce(max(e.number), 0) FROM registry_entries e WHERE e.program_id = %(program)s)
       + row_number() OVER (ORDER BY r.occurred_at, r.id)
  FROM reconciliation_records r
 WHERE r.program_id = %(program)s AND r.booked_period = %(month)s
   AND NOT EXISTS (SELECT 1 FROM registry_entries e WHERE e.record_id = r.id)
 ORDER BY r.occurred_at, r.id"""


def number_records(db: Any, period_id: int, program_id: int, month: date) -> int:
    """Gives the period's records their registry numbers (once: a second call numbers nothing);
    returns how many it numbered."""
    db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (REGISTRY_LOCK, program_id))
    params = {"period": period_id, "program": program_id, "month": month}
    return int(db.execute(_NUMBER_RECORDS, params).rowcount)


def _produce_documents(period_id: int, program: ProgramRow) -> None:
    with transaction() as session:
        db = driver(session)
        db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (DOCS_LOCK, period_id))
        row = db.execute(
            "SELECT status, month, number, act_number, registry_number, closed_at FROM periods WHERE id = %s",
            (period_id,),
        ).fetchone()
        if row is None or row[0] == "closed":
            return
        _, month, _, act_number, registry_number, closed_at = row
        number_records(db, period_id, program.id, month)
        totals = compute_totals(db, program.id, month)
        flt = RecordFilter(program_ids=[program.id], booked_period=month)
        stem = f"{program.code}-{month:%Y-%m}"
        hashes: dict[str, str] = {}
        with (
            tempfile.TemporaryFile() as csv_file,
            tempfile.TemporaryFile() as xlsx_file,
            tempfile.TemporaryFile() as pdf_file,
        ):
            for block in iter_csv(db, flt, numbered=True):
                csv_file.write(block)
            preamble = [
                f"Реестр № {registry_number} к акту № {act_number}",
                f"Программа: {program.name} ({program.code}); период: {month_title_ru(month)} "
                f"({program.timezone}); записей: {totals['records']}",
            ]
            write_xlsx(
                db,
                flt,
                xlsx_file,
                numbered=True,
                preamble=preamble,
                sheet_title="Реестр",
                expected_rows=totals["records"],
                totals_row=_totals_row(totals),
            )
            _, hashes["CSV"] = _store(
                db, period_id, "registry.csv", registry_number, f"registry-{stem}.csv", csv_file
            )
            _, hashes["XLSX"] = _store(
                db, period_id, "registry.xlsx", registry_number, f"registry-{stem}.xlsx", xlsx_file
            )
            pdf_file.write(
                render_act(
                    period={
                        "month": month,
                        "act_number": act_number,
                        "registry_number": registry_number,
                        "closed_at": closed_at.astimezone(program.zone),
                    },
                    program={
                        "code": program.code,
                        "name": program.name,
                        "timezone": program.timezone,
                        "currency": program.currency,
                    },
                    totals=totals,
                    registry=hashes,
                )
            )
            _store(db, period_id, "act.pdf", act_number, f"act-{stem}.pdf", pdf_file)
        db.execute(
            "UPDATE periods SET status = 'closed', totals = %s::jsonb, record_count = %s,"
            " documents_at = now() WHERE id = %s",
            (orjson.dumps(totals).decode(), totals["records"], period_id),
        )
        url = db.execute("SELECT webhook_url FROM programs WHERE id = %s", (program.id,)).fetchone()
        webhooks.emit(
            db,
            program_id=program.id,
            webhook_url=url[0] if url else None,
            redemption_id=None,
            event="period.closed",
            now=datetime.now(UTC),
            data={
                "program": program.code,
                "period": f"{month:%Y-%m}",
                "act_number": act_number,
                "registry_number": registry_number,
                "records": totals["records"],
                "closed_at": closed_at.isoformat(),
            },
        )


def _totals_row(totals: dict[str, Any]) -> dict[str, str] | None:
    if len(totals["by_currency"]) != 1:
        return None
    currency, t = next(iter(totals["by_currency"].items()))
    return {
        "document_number": "Итого",
        "quantity": str(t["quantity"]),
        "face_value": to_decimal_string(t["face_value_minor"], currency),
        "cost": to_decimal_string(t["cost_minor"], currency),
        "vat_amount": to_decimal_string(t["vat_minor"], currency),
    }


# --- reading -------------------------------------------------------------------------------------


def _money(minor: int, currency: str) -> dict[str, str]:
    return {"amount": to_decimal_string(minor, currency), "currency": currency}


def render_totals(totals: dict[str, Any]) -> dict[str, Any]:
    def sums(item: dict[str, Any]) -> dict[str, Any]:
        cur = item["currency"]
        return {
            "face_value": _money(item["face_value_minor"], cur),
            "cost": _money(item["cost_minor"], cur),
            "vat": _money(item["vat_minor"], cur),
        }

    return {
        "records": totals["records"],
        "late_records": totals.get("late_records", 0),
        "by_currency": [
            {
                "currency": cur,
                "records": t["records"],
                "quantity": t["quantity"],
                **sums({**t, "currency": cur}),
            }
            for cur, t in sorted(totals["by_currency"].items())
        ],
        "by_product": [
            {
                "sku": p["sku"],
                "name": p["name"],
                "partner": p["partner"],
                "records": p["records"],
                "quantity": p["quantity"],
                "vat_rate": to_decimal_string(p["vat_rate_bp"], "KZT"),
                **sums(p),
            }
            for p in totals["by_product"]
        ],
        "by_type": [
            {"type": t["type"], "records": t["records"], "quantity": t["quantity"], **sums(t)}
            for t in totals["by_type"]
        ],
    }


def period_view(program_code: str, month: date) -> dict[str, Any]:
    with new_session() as session:
        db = driver(session)
        program = find_program(db, program_code)
        row = db.execute(
            "SELECT id, status, act_number, registry_number, closed_at, closed_by, record_count, totals"
            " FROM periods WHERE program_id = %s AND month = %s",
            (program.id, month),
        ).fetchone()
        base = {
            "program": program.code,
            "month": f"{month:%Y-%m}",
            "timezone": program.timezone,
            "ends_at": month_end(month, program.zone),
        }
        if row is None:
            return {**base, "status": "open", "documents": []}
        docs = db.execute(
            "SELECT kind, number, filename, content_type, size, sha256, created_at"
            " FROM period_documents WHERE period_id = %s ORDER BY kind",
            (row[0],),
        ).fetchall()
        return {
            **base,
            "status": row[1],
            "act_number": row[2],
            "registry_number": row[3],
            "closed_at": row[4],
            "closed_by": row[5],
            "record_count": row[6],
            "totals": render_totals(row[7]) if row[7] is not None else None,
            "documents": [
                {
                    "kind": d[0],
                    "number": d[1],
                    "filename": d[2],
                    "content_type": d[3],
                    "size": d[4],
                    "sha256": d[5],
                    "created_at": d[6],
                    "href": f"/v1/periods/{month:%Y-%m}/documents/{d[0]}?program={program.code}",
                }
                for d in docs
            ],
        }


@dataclass(frozen=True)
class StoredDocument:
    filename: str
    content_type: str
    size: int
    sha256: str
    document_id: int


def find_document(program_code: str, month: date, kind: str) -> StoredDocument:
    with new_session() as session:
        db = driver(session)
        program = find_program(db, program_code)
        row = db.execute(
            "SELECT d.filename, d.content_type, d.size, d.sha256, d.id FROM periods p"
            " JOIN period_documents d ON d.period_id = p.id"
            " WHERE p.program_id = %s AND p.month = %s AND d.kind = %s AND p.status = 'closed'",
            (program.id, month, kind),
        ).fetchone()
    if row is None:
        raise PeriodNotClosed(
            f"{program_code} {month:%Y-%m} has no closing documents: close the period first",
        )
    return StoredDocument(*row)


def iter_document(document_id: int) -> Iterator[bytes]:
    with new_session() as session:
        db = driver(session)
        with db.cursor(name="document_chunks") as cur:
            cur.itersize = 2
            cur.execute(
                "SELECT data FROM period_document_chunks WHERE document_id = %s ORDER BY seq", (document_id,)
            )
            for (data,) in cur:
                yield bytes(data)


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
