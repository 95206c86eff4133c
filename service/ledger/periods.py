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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import IO, Any, TypeVar, cast
from zoneinfo import ZoneInfo

import orjson
from psycopg import Connection
from psycopg.rows import RowFactory, class_row, dict_row, scalar_row

from service.catalog.errors import UnknownProgram
from service.events import webhooks
from service.kit.db.engine import driver, new_session, one, transaction
from service.kit.values.money import Money, to_decimal_string
from service.kit.values.zones import zone
from service.ledger.documents import month_title_ru, render_act
from service.ledger.errors import PeriodNotClosed, PeriodNotEnded
from service.ledger.exports import RecordFilter, iter_csv, write_xlsx
from service.ledger.models import PERIOD_LOCK
from service.ledger.schemas import (
    CampaignTotal,
    CurrencyTotal,
    PeriodTotals,
    ProductTotal,
    TypeTotal,
)
from service.ledger.sql import load
from service.ledger.totals import SUM_KEYS, CampaignLine, ProductLine, Sums, Totals, TypeLine

DOCS_LOCK = PERIOD_LOCK + 1
REGISTRY_LOCK = PERIOD_LOCK + 2  # (REGISTRY_LOCK, program id): the program's registry numbering
NUMBERING_KEY = 0  # (PERIOD_LOCK, 0): program ids start at 1
CHUNK = 1 << 20
KINDS = {
    "act.pdf": ("application/pdf", "act"),
    "registry.xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "registry"),
    "registry.csv": ("text/csv; charset=utf-8", "registry"),
}

_T = TypeVar("_T")

# The statements of the month close and of its views (sql/*.sql).
PROGRAM = load("program")
PROGRAM_WEBHOOK = load("program_webhook")
ADVISORY_LOCK = load("advisory_lock")
TOTALS_BY_PRODUCT = load("totals_by_product")
TOTALS_BY_TYPE = load("totals_by_type")
LATE_RECORDS = load("late_records")
PERIOD_ID = load("period_id")
NEXT_PERIOD_NUMBER = load("next_period_number")
INSERT_PERIOD = load("insert_period")
INSERT_DOCUMENT = load("insert_document")
INSERT_DOCUMENT_CHUNK = load("insert_document_chunk")
NUMBER_RECORDS = load("number_records")
CLOSING_PERIOD = load("closing_period")
MARK_CLOSED = load("mark_closed")
PERIOD = load("period")
PERIOD_DOCUMENTS = load("period_documents")
FIND_DOCUMENT = load("find_document")
DOCUMENT_CHUNKS = load("document_chunks")


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


def find_program(db: Connection[Any], code: str) -> ProgramRow:
    with db.cursor(row_factory=class_row(ProgramRow)) as cursor:
        program = cursor.execute(PROGRAM, {"code": code}).fetchone()
    if program is None:
        raise UnknownProgram(f"no program {code}")
    return program


def _lock(db: Connection[Any], lock_class: int, key: int) -> None:
    db.execute(ADVISORY_LOCK, {"class": lock_class, "key": key})


# --- totals --------------------------------------------------------------------------------------


def compute_totals(db: Connection[Any], program_id: int, month: date) -> Totals:
    """Sums of the records booked into the period, per product and VAT rate, per type, per currency.
    Integers (minor units) only."""
    params = {"program": program_id, "month": month}
    by_product = (
        db.cursor(row_factory=_typed_dict_row(ProductLine)).execute(TOTALS_BY_PRODUCT, params).fetchall()
    )
    by_type = db.cursor(row_factory=_typed_dict_row(TypeLine)).execute(TOTALS_BY_TYPE, params).fetchall()
    by_currency: dict[str, Sums] = {}
    for line in by_product:
        t = by_currency.setdefault(
            line["currency"],
            {"records": 0, "quantity": 0, "face_value_minor": 0, "cost_minor": 0, "vat_minor": 0},
        )
        for key in SUM_KEYS:
            t[key] += line[key]
    late = int(one(db.cursor(row_factory=scalar_row).execute(LATE_RECORDS, params).fetchone()))
    return {
        "records": sum(line["records"] for line in by_product),
        "by_currency": by_currency,
        "by_product": by_product,
        "by_type": by_type,
        "by_campaign": by_campaign(by_product),
        "late_records": late,
    }


def by_campaign(by_product: list[ProductLine]) -> list[CampaignLine]:
    """The product lines summed per source and currency: the on-demand records first, then each
    campaign by its name. Integer sums of the same lines, so each currency's lines add up to its total."""
    lines: dict[tuple[str | None, str], CampaignLine] = {}
    for line in by_product:
        campaign = line.get("campaign_id")
        t = lines.setdefault(
            (campaign, line["currency"]),
            {
                "campaign_id": campaign,
                "campaign_name": line.get("campaign_name"),
                "currency": line["currency"],
                "records": 0,
                "quantity": 0,
                "face_value_minor": 0,
                "cost_minor": 0,
                "vat_minor": 0,
            },
        )
        for key in SUM_KEYS:
            t[key] += line[key]
    return sorted(
        lines.values(),
        key=lambda t: (
            t["campaign_id"] is not None,
            t["campaign_name"] or "",
            t["campaign_id"] or "",
            t["currency"],
        ),
    )


def _typed_dict_row(_: type[_T]) -> RowFactory[_T]:
    """dict_row, typed as the TypedDict `_` that the statement's columns make up."""
    return cast(RowFactory[_T], dict_row)


# --- closing -------------------------------------------------------------------------------------


def close_month(
    program_code: str, month: date, *, now: datetime | None = None, closed_by: str | None = None
) -> Period:
    """Closes a program's month (see the module's docstring) and returns it, closed; a closed month is
    returned as it is."""
    now = now or datetime.now(UTC)
    with transaction() as session:
        db = driver(session)
        program = find_program(db, program_code)
        end = month_end(month, program.zone)
        if now < end:
            raise PeriodNotEnded(
                f"{month:%Y-%m} ends at {end.astimezone(program.zone).isoformat()} in {program.timezone}",
            )
        _lock(db, PERIOD_LOCK, program.id)
        ids = db.cursor(row_factory=scalar_row)
        period_id = ids.execute(PERIOD_ID, {"program": program.id, "month": month}).fetchone()
        if period_id is None:
            _lock(db, PERIOD_LOCK, NUMBERING_KEY)
            number = one(ids.execute(NEXT_PERIOD_NUMBER).fetchone())
            period_id = ids.execute(
                INSERT_PERIOD,
                {
                    "program": program.id,
                    "month": month,
                    "number": number,
                    "act_number": f"A-{number:06d}",
                    "registry_number": f"R-{number:06d}",
                    "closed_at": now,
                    "closed_by": closed_by,
                },
            ).fetchone()
    _produce_documents(one(period_id), program)
    return read_period(program_code, month)


def _store(
    db: Connection[Any], period_id: int, kind: str, number: str, filename: str, fh: IO[bytes]
) -> tuple[int, str]:
    fh.seek(0)
    digest = hashlib.sha256()
    size = 0
    # size and hash first (the row is immutable once written), then the chunks
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    fh.seek(0)
    document_id = one(
        db.cursor(row_factory=scalar_row)
        .execute(
            INSERT_DOCUMENT,
            {
                "period": period_id,
                "kind": kind,
                "number": number,
                "filename": filename,
                "content_type": KINDS[kind][0],
                "size": size,
                "sha256": digest.hexdigest(),
            },
        )
        .fetchone()
    )
    seq = 0
    while chunk := fh.read(CHUNK):
        db.execute(INSERT_DOCUMENT_CHUNK, {"document": document_id, "seq": seq, "data": chunk})
        seq += 1
    return size, digest.hexdigest()


def number_records(db: Connection[Any], period_id: int, program_id: int, month: date) -> int:
    """Gives the period's records their registry numbers (once: a second call numbers nothing);
    returns how many it numbered."""
    _lock(db, REGISTRY_LOCK, program_id)
    params = {"period": period_id, "program": program_id, "month": month}
    return int(db.execute(NUMBER_RECORDS, params).rowcount)


@dataclass(frozen=True)
class ClosingPeriod:
    status: str
    month: date
    act_number: str
    registry_number: str
    closed_at: datetime


def _produce_documents(period_id: int, program: ProgramRow) -> None:
    with transaction() as session:
        db = driver(session)
        _lock(db, DOCS_LOCK, period_id)
        with db.cursor(row_factory=class_row(ClosingPeriod)) as cursor:
            period = cursor.execute(CLOSING_PERIOD, {"period": period_id}).fetchone()
        if period is None or period.status == "closed":
            return
        month, act_number, registry_number = period.month, period.act_number, period.registry_number
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
                        "closed_at": period.closed_at.astimezone(program.zone),
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
            MARK_CLOSED,
            {"totals": orjson.dumps(totals).decode(), "records": totals["records"], "period": period_id},
        )
        with db.cursor(row_factory=scalar_row) as cursor:
            webhook_url = cursor.execute(PROGRAM_WEBHOOK, {"program": program.id}).fetchone()
        webhooks.emit(
            db,
            program_id=program.id,
            webhook_url=webhook_url,
            redemption_id=None,
            event="period.closed",
            now=datetime.now(UTC),
            data={
                "program": program.code,
                "period": f"{month:%Y-%m}",
                "act_number": act_number,
                "registry_number": registry_number,
                "records": totals["records"],
                "closed_at": period.closed_at.isoformat(),
            },
        )


def _totals_row(totals: Totals) -> dict[str, str] | None:
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


def render_totals(totals: Totals) -> PeriodTotals:
    """Totals in minor units as the API shows them (PeriodTotals): amounts as Money."""

    def sums(item: Mapping[str, Any]) -> dict[str, Money]:
        cur = item["currency"]
        return {
            "face_value": Money.of(item["face_value_minor"], cur),
            "cost": Money.of(item["cost_minor"], cur),
            "vat": Money.of(item["vat_minor"], cur),
        }

    return PeriodTotals(
        records=totals["records"],
        late_records=totals.get("late_records", 0),
        by_currency=[
            CurrencyTotal(
                currency=cur,
                records=t["records"],
                quantity=t["quantity"],
                **sums({**t, "currency": cur}),
            )
            for cur, t in sorted(totals["by_currency"].items())
        ],
        by_product=[
            ProductTotal(
                sku=p["sku"],
                name=p["name"],
                partner=p["partner"],
                records=p["records"],
                quantity=p["quantity"],
                vat_rate=to_decimal_string(p["vat_rate_bp"], "KZT"),
                campaign=p.get("campaign_id"),
                campaign_name=p.get("campaign_name"),
                **sums(p),
            )
            for p in totals["by_product"]
        ],
        by_campaign=[
            CampaignTotal(
                campaign=c["campaign_id"],
                campaign_name=c["campaign_name"],
                currency=c["currency"],
                records=c["records"],
                quantity=c["quantity"],
                **sums(c),
            )
            for c in totals.get("by_campaign", by_campaign(totals["by_product"]))
        ],
        by_type=[
            TypeTotal(type=t["type"], records=t["records"], quantity=t["quantity"], **sums(t))
            for t in totals["by_type"]
        ],
    )


@dataclass(frozen=True)
class PeriodDocument:
    """A closing document of a period, without its content."""

    kind: str
    number: str
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class PeriodRow:
    id: int
    status: str
    act_number: str | None
    registry_number: str | None
    closed_at: datetime | None
    closed_by: str | None
    record_count: int | None
    totals: Totals | None


@dataclass(frozen=True)
class Period:
    """A program's month: open (no period row yet), closing or closed, with its frozen totals and its
    documents (which carry no link: the HTTP layer adds its own) once closed."""

    program: str
    month: date
    timezone: str
    ends_at: datetime
    status: str
    row: PeriodRow | None = None
    documents: tuple[PeriodDocument, ...] = ()

    @property
    def act_number(self) -> str | None:
        return None if self.row is None else self.row.act_number

    @property
    def registry_number(self) -> str | None:
        return None if self.row is None else self.row.registry_number

    @property
    def closed_at(self) -> datetime | None:
        return None if self.row is None else self.row.closed_at

    @property
    def closed_by(self) -> str | None:
        return None if self.row is None else self.row.closed_by

    @property
    def record_count(self) -> int | None:
        return None if self.row is None else self.row.record_count

    @property
    def totals(self) -> Totals | None:
        """The frozen totals in minor units (render_totals shows them as the API does); None until
        closed."""
        return None if self.row is None else self.row.totals


def read_period(program_code: str, month: date) -> Period:
    with new_session() as session:
        db = driver(session)
        program = find_program(db, program_code)
        with db.cursor(row_factory=class_row(PeriodRow)) as cursor:
            row = cursor.execute(PERIOD, {"program": program.id, "month": month}).fetchone()
        documents: list[PeriodDocument] = []
        if row is not None:
            with db.cursor(row_factory=class_row(PeriodDocument)) as cursor:
                documents = cursor.execute(PERIOD_DOCUMENTS, {"period": row.id}).fetchall()
    return Period(
        program=program.code,
        month=month,
        timezone=program.timezone,
        ends_at=month_end(month, program.zone),
        status="open" if row is None else row.status,
        row=row,
        documents=tuple(documents),
    )


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
        with db.cursor(row_factory=class_row(StoredDocument)) as cursor:
            found = cursor.execute(
                FIND_DOCUMENT, {"program": program.id, "month": month, "kind": kind}
            ).fetchone()
    if found is None:
        raise PeriodNotClosed(
            f"{program_code} {month:%Y-%m} has no closing documents: close the period first",
        )
    return found


def iter_document(document_id: int) -> Iterator[bytes]:
    with new_session() as session:
        db = driver(session)
        with db.cursor(name="document_chunks", row_factory=scalar_row) as cur:
            cur.itersize = 2
            cur.execute(DOCUMENT_CHUNKS, {"document": document_id})
            for data in cur:
                yield bytes(data)


def json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
