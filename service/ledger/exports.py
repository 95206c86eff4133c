"""Reconciliation records out of the database in constant memory: CSV straight from PostgreSQL's
COPY, JSON Lines and XLSX from a server-side (named) cursor. One column list serves the API export,
the CLI export and the closing registry, so the three always agree.

Every value is formatted in SQL from the integer minor units (`round(minor::numeric / 100, 2)`), so
money is exact decimal text from the database to the file; Python never does arithmetic on it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import IO, Any

import orjson
from psycopg import Connection
from psycopg.rows import scalar_row

from service.kit.db.engine import one
from service.kit.values.money import EXPONENTS
from service.ledger.xlsx import Column, XlsxWriter

CHUNK_ROWS = 5000


@dataclass(frozen=True)
class ExportColumn:
    key: str  # CSV header and JSON key (stable, machine-readable)
    title: str  # XLSX header (Russian: what the accountant reads)
    sql: str
    kind: str = "text"  # text | int | money
    width: float = 14


def _money(column: str) -> str:
    by_exponent: dict[int, list[str]] = {}
    for currency, exp in EXPONENTS.items():
        by_exponent.setdefault(exp, []).append(currency)
    if len(by_exponent) == 1:
        exp = next(iter(by_exponent))
        return f"round({column}::numeric / {10**exp}, {exp})::text"
    cases = " ".join(
        f"WHEN r.currency IN ({', '.join(repr(c) for c in cs)})"
        f" THEN round({column}::numeric / {10**e}, {e})::text"
        for e, cs in by_exponent.items()
    )
    return f"CASE {cases} END"


_ZONE = "coalesce(p.timezone, 'UTC')"

COLUMNS: tuple[ExportColumn, ...] = (
    # The record's number in its program's registry, given when its period closes (none before):
    # gapless, unlike the record's id (see periods.number_records).
    ExportColumn("document_number", "Номер документа", "'RR-' || lpad(e.number::text, 10, '0')", width=16),
    ExportColumn(
        "date",
        "Дата (местное время)",
        f"to_char(r.occurred_at AT TIME ZONE {_ZONE}, 'YYYY-MM-DD HH24:MI:SS')",
        width=20,
    ),
    ExportColumn(
        "occurred_at_utc",
        "Время UTC",
        "to_char(r.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        width=28,
    ),
    ExportColumn("booked_period", "Учётный период", "to_char(r.booked_period, 'YYYY-MM')", width=10),
    ExportColumn("type", "Тип операции", "r.type", width=10),
    ExportColumn("program", "Программа", "p.code", width=16),
    ExportColumn("tariff", "Тариф", "t.code", width=12),
    ExportColumn("partner", "Партнёр", "pa.code", width=14),
    ExportColumn("partner_name", "Наименование партнёра", "pa.name", width=22),
    ExportColumn("sku", "Артикул", "r.sku", width=20),
    ExportColumn("product_name", "Товар", "pr.name", width=34),
    ExportColumn("quantity", "Кол-во", "r.quantity::text", "int", 8),
    ExportColumn("currency", "Валюта", "r.currency", width=7),
    ExportColumn("face_value", "Номинал", _money("r.face_value_minor"), "money", 13),
    ExportColumn("cost", "Себестоимость", _money("r.cost_minor"), "money", 13),
    ExportColumn("vat_rate", "Ставка НДС, %", "round(r.vat_rate_bp::numeric / 100, 2)::text", "money", 9),
    ExportColumn("vat_amount", "НДС (в т.ч.)", _money("r.vat_minor"), "money", 12),
    ExportColumn("code_last4", "Код (последние 4)", "r.code_last4", width=9),
    ExportColumn(
        "code_fingerprint", "Отпечаток кода (SHA-256 HMAC)", "encode(r.code_fingerprint, 'hex')", width=66
    ),
    ExportColumn("redemption_id", "ID выдачи", "r.redemption_id::text", width=38),
    ExportColumn("card_id", "ID карты", "r.card_id::text", width=10),
    # The campaign whose grant the record books (service/campaigns: no points debited), empty for an
    # on-demand redemption's record: the id, and the campaign's name for the reader.
    ExportColumn("campaign", "ID кампании", "r.campaign_id::text", width=38),
    ExportColumn("campaign_name", "Кампания", "ca.name", width=24),
    # Where an exchange happened: the partner's desk or the holder's reward page (records from before
    # the channel was recorded are all the partner's).
    ExportColumn(
        "channel",
        "Канал обмена",
        "CASE WHEN r.type = 'exchange' THEN coalesce(r.channel, 'partner') END",
        width=9,
    ),
)
# Added when the cards engineer's migration gives records an exchange id (detected at run time).
EXCHANGE_COLUMN = ExportColumn("exchange_id", "ID обмена", "r.exchange_id::text", width=38)
LINE_COLUMN = ExportColumn(
    "line", "№ п/п", "row_number() OVER (ORDER BY r.occurred_at, r.id)::text", "int", 8
)

_FROM = (
    "FROM reconciliation_records r"
    " LEFT JOIN programs p ON p.id = r.program_id"
    " LEFT JOIN tariffs t ON t.id = r.tariff_id"
    " LEFT JOIN partners pa ON pa.id = r.partner_id"
    " JOIN products pr ON pr.id = r.product_id"
    " LEFT JOIN registry_entries e ON e.record_id = r.id"
    " LEFT JOIN campaigns ca ON ca.id = r.campaign_id"
)


@dataclass
class RecordFilter:
    program_ids: list[int] | None = None
    partner_id: int | None = None
    sku: str | None = None
    types: list[str] | None = None
    booked_period: date | None = None  # first day of the month
    date_from: date | None = None  # local dates in the program's time zone, inclusive
    date_to: date | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.program_ids is not None:
            clauses.append("r.program_id = ANY(%(programs)s)")
            params["programs"] = self.program_ids
        if self.partner_id is not None:
            clauses.append("r.partner_id = %(partner)s")
            params["partner"] = self.partner_id
        if self.sku is not None:
            clauses.append("r.sku = %(sku)s")
            params["sku"] = self.sku
        if self.types:
            clauses.append("r.type = ANY(%(types)s)")
            params["types"] = self.types
        if self.booked_period is not None:
            clauses.append("r.booked_period = %(period)s")
            params["period"] = self.booked_period
        if self.date_from is not None:
            # the coarse UTC bound lets the index narrow the scan; the local date decides
            clauses.append(
                "r.occurred_at >= %(from)s::date - 2"
                f" AND (r.occurred_at AT TIME ZONE {_ZONE})::date >= %(from)s"
            )
            params["from"] = self.date_from
        if self.date_to is not None:
            clauses.append(
                f"r.occurred_at < %(to)s::date + 2 AND (r.occurred_at AT TIME ZONE {_ZONE})::date <= %(to)s"
            )
            params["to"] = self.date_to
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def record_columns(conn: Connection[Any], *, numbered: bool = False) -> list[ExportColumn]:
    columns = list(COLUMNS)
    has_exchange = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'reconciliation_records' AND column_name = 'exchange_id'"
    ).fetchone()
    if has_exchange:
        columns.append(EXCHANGE_COLUMN)
    return [LINE_COLUMN, *columns] if numbered else columns


def select_sql(columns: list[ExportColumn], flt: RecordFilter) -> tuple[str, dict[str, Any]]:
    where, params = flt.where()
    select = ", ".join(f'{c.sql} AS "{c.key}"' for c in columns)
    return f"SELECT {select} {_FROM}{where} ORDER BY r.occurred_at, r.id", params


def count_records(conn: Connection[Any], flt: RecordFilter) -> int:
    where, params = flt.where()
    return int(
        one(conn.cursor(row_factory=scalar_row).execute(f"SELECT count(*) {_FROM}{where}", params).fetchone())
    )


Progress = Callable[[int], None]


def iter_csv(
    conn: Connection[Any], flt: RecordFilter, *, numbered: bool = False, progress: Progress | None = None
) -> Iterator[bytes]:
    """CSV (RFC 4180, UTF-8, header line) straight from COPY, block by block."""
    sql, params = select_sql(record_columns(conn, numbered=numbered), flt)
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)", params) as copy,
    ):
        for block in copy:
            data = bytes(block)
            if progress:
                progress(data.count(b"\n"))
            yield data


def _rows(conn: Connection[Any], sql: str, params: dict[str, Any]) -> Iterator[list[tuple[Any, ...]]]:
    with conn.cursor(name="records_export") as cur:
        cur.itersize = CHUNK_ROWS
        cur.execute(sql, params)
        while True:
            rows = cur.fetchmany(CHUNK_ROWS)
            if not rows:
                return
            yield rows


def iter_jsonl(
    conn: Connection[Any], flt: RecordFilter, *, progress: Progress | None = None
) -> Iterator[bytes]:
    columns = record_columns(conn)
    sql, params = select_sql(columns, flt)
    keys = [c.key for c in columns]
    ints = [c.key for c in columns if c.kind == "int"]
    for rows in _rows(conn, sql, params):
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            for key in ints:
                item[key] = int(item[key])
            out.append(orjson.dumps(item))
        if progress:
            progress(len(rows))
        yield b"\n".join(out) + b"\n"


def write_xlsx(
    conn: Connection[Any],
    flt: RecordFilter,
    fileobj: IO[bytes],
    *,
    numbered: bool = False,
    preamble: list[str] | None = None,
    sheet_title: str = "Записи",
    expected_rows: int | None = None,
    totals_row: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> int:
    columns = record_columns(conn, numbered=numbered)
    sql, params = select_sql(columns, flt)
    writer = XlsxWriter(
        fileobj,
        [Column(c.title, c.kind, c.width) for c in columns],
        sheet_title=sheet_title,
        preamble=preamble or [],
        zip64=(expected_rows or 0) > 1_500_000,
    )
    total = 0
    for rows in _rows(conn, sql, params):
        total += writer.write_rows(rows)
        if progress:
            progress(len(rows))
    if totals_row:
        writer.write_rows([tuple(totals_row.get(c.key) for c in columns)])
    writer.close()
    return total


def iter_xlsx(
    conn: Connection[Any], flt: RecordFilter, *, progress: Progress | None = None, chunk_size: int = 1 << 20
) -> Iterator[bytes]:
    """XLSX needs its zip directory at the end: written to a temp file, then streamed in chunks."""
    expected = count_records(conn, flt)
    with tempfile.TemporaryFile(prefix="records-", suffix=".xlsx") as tmp:
        write_xlsx(conn, flt, tmp, expected_rows=expected, progress=progress)
        tmp.seek(0)
        while chunk := tmp.read(chunk_size):
            yield chunk


MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/jsonl",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def iter_export(
    conn: Connection[Any], flt: RecordFilter, fmt: str, *, progress: Progress | None = None
) -> Iterator[bytes]:
    if fmt == "csv":
        return iter_csv(conn, flt, progress=progress)
    if fmt == "jsonl":
        return iter_jsonl(conn, flt, progress=progress)
    if fmt == "xlsx":
        return iter_xlsx(conn, flt, progress=progress)
    raise ValueError(f"unknown format {fmt}")
