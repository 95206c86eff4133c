"""Finance routes: record exports, month close, closing documents, partner reconciliation.
Only the finance role (and admin) may call them; finance sees every program."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from psycopg.rows import scalar_row
from starlette.concurrency import run_in_threadpool

from catalog.model import SKU, SLUG
from service.auth.deps import require
from service.auth.service import Principal
from service.catalog.errors import UnknownPartner, UnknownProduct, UnknownProgram
from service.kit.db.engine import driver, get_engine, new_session, raw_connection
from service.kit.http.csv_body import NotCsv, csv_request_body, csv_upload
from service.kit.http.downloads import download_media_type, download_response
from service.kit.http.errors import InvalidRange, UnsupportedMediaType, ValidationFailed, responses
from service.kit.http.strict import parse_month, reject_unknown_query
from service.ledger import periods
from service.ledger.errors import PeriodNotClosed, PeriodNotEnded
from service.ledger.exports import MEDIA_TYPES, RecordFilter, iter_export
from service.ledger.reconciliation import reconcile_partner
from service.ledger.schemas import (
    MONTH_PATTERN,
    DocumentKind,
    DocumentsOut,
    ExportFormat,
    PartnerReconciliationOut,
    PeriodOut,
    RecordType,
)
from service.ledger.sql import load

router = APIRouter(
    prefix="/v1", tags=["finance"], responses=responses(), dependencies=[Depends(reject_unknown_query)]
)
log = structlog.get_logger("finance")

Month = Annotated[str, Path(pattern=MONTH_PATTERN, description="Month YYYY-MM in the program's time zone")]
ProgramQuery = Annotated[str, Query(pattern=SLUG, description="Program code")]
finance = require("finance")


PARTNER_ID = load("partner_id")
PRODUCT_EXISTS = load("product_exists")


def document_href(period: periods.Period, kind: str) -> str:
    """Where GET /v1/periods/{month}/documents/{kind} serves a closing document of the period."""
    return f"/v1/periods/{period.month:%Y-%m}/documents/{kind}?program={period.program}"


def period_body(period: periods.Period) -> dict[str, Any]:
    """A month as GET /v1/periods/{month} answers it (PeriodOut): its documents with their links.
    `rewards periods show` prints the same."""
    body = period.as_dict()
    body["documents"] = [{**doc, "href": document_href(period, doc["kind"])} for doc in body["documents"]]
    return body


def resolve_filter(
    *,
    period: str | None,
    date_from: date | None,
    date_to: date | None,
    program: str | None,
    partner: str | None,
    sku: str | None,
    types: Sequence[str] | None,
) -> RecordFilter:
    flt = RecordFilter(types=sorted(set(types)) if types else None, date_from=date_from, date_to=date_to)
    if period is not None:
        flt.booked_period = parse_month(period, "query.period")
    if date_from and date_to and date_from > date_to:
        raise InvalidRange(
            "from must not be after to",
            errors=[{"field": "query.from", "message": "after query.to", "type": "value_error"}],
        )
    with new_session() as session:
        db = driver(session)
        if program is not None:
            flt.program_ids = [periods.find_program(db, program).id]
        if partner is not None:
            with db.cursor(row_factory=scalar_row) as cursor:
                partner_id = cursor.execute(PARTNER_ID, {"code": partner}).fetchone()
            if partner_id is None:
                raise UnknownPartner(f"no partner {partner}")
            flt.partner_id = partner_id
        if sku is not None:
            if db.execute(PRODUCT_EXISTS, {"sku": sku}).fetchone() is None:
                raise UnknownProduct(f"no product {sku}")
            flt.sku = sku
    return flt


# A calendar date YYYY-MM-DD of the years 2000-2999 (as months are): days past a month's end and
# 29 February of a common year do not match, so every string of this form is a real date.
DATE_PATTERN = (
    r"^(?:2\d{3}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r"|(?:2\d(?:0[48]|[2468][048]|[13579][26])|2[048]00)-02-29)$"
)


def _date(value: str | None, field: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(
            f"{field.split('.')[-1]} is not a date YYYY-MM-DD",
            errors=[{"field": field, "message": "not a calendar date", "type": "date_from_datetime_parsing"}],
        ) from None


def _stream(flt: RecordFilter, fmt: str) -> Iterator[bytes]:
    with get_engine().connect() as connection:
        db = raw_connection(connection)
        db.rollback()  # a fresh transaction: the snapshot setting must come first
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield from iter_export(db, flt, fmt)
        connection.rollback()


_EXPORT_CONTENT = download_response(
    "The records, streamed", MEDIA_TYPES["csv"], MEDIA_TYPES["jsonl"], MEDIA_TYPES["xlsx"]
)


@router.get(
    "/reconciliation/records",
    summary="Reconciliation records as CSV, JSON Lines or XLSX (streamed)",
    description=(
        "One row per record (columns in docs/finance.md), ordered by time. `campaign` is the id of the"
        " campaign whose grant the record books (a campaign grant debits no points) and `campaign_name`"
        " its name; both are empty (null in JSON Lines) for an on-demand redemption's record."
    ),
    response_class=StreamingResponse,
    responses={**responses(UnknownProgram, UnknownPartner, UnknownProduct, InvalidRange), **_EXPORT_CONTENT},
)
def export_records(
    request: Request,
    principal: Principal = Depends(finance),
    format: Annotated[ExportFormat, Query(description="csv, jsonl or xlsx")] = "csv",
    period: Annotated[str | None, Query(pattern=MONTH_PATTERN, description="Booked period YYYY-MM")] = None,
    date_from: Annotated[
        str | None,
        Query(alias="from", pattern=DATE_PATTERN, description="First local date YYYY-MM-DD (inclusive)"),
    ] = None,
    date_to: Annotated[
        str | None,
        Query(alias="to", pattern=DATE_PATTERN, description="Last local date YYYY-MM-DD (inclusive)"),
    ] = None,
    program: Annotated[str | None, Query(pattern=SLUG)] = None,
    partner: Annotated[str | None, Query(pattern=SLUG)] = None,
    sku: Annotated[str | None, Query(pattern=SKU)] = None,
    type: Annotated[list[RecordType] | None, Query(description="Record type (repeatable)")] = None,
) -> StreamingResponse:
    flt = resolve_filter(
        period=period,
        date_from=_date(date_from, "query.from"),
        date_to=_date(date_to, "query.to"),
        program=program,
        partner=partner,
        sku=sku,
        types=type,
    )
    name = "records" + "".join(
        f"-{v}" for v in (program, period or (date_from and f"{date_from}"), date_to and f"{date_to}") if v
    )
    log.info("records_export", format=format, program=program, period=period, key_id=principal.key_id)
    return StreamingResponse(
        _stream(flt, format),
        media_type=download_media_type(request, MEDIA_TYPES[format]),
        headers={
            "Content-Disposition": f'attachment; filename="{name}.{format}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/periods/{month}",
    response_model=PeriodOut,
    summary="A month of a program: open or closed, totals",
    responses=responses(UnknownProgram),
)
def get_period(
    month: Month, program: ProgramQuery, principal: Principal = Depends(finance)
) -> dict[str, Any]:
    return period_body(periods.read_period(program, parse_month(month)))


@router.post(
    "/periods/{month}/close",
    response_model=PeriodOut,
    responses=responses(UnknownProgram, PeriodNotEnded),
    summary="Close a month: freeze totals, number and produce the act (PDF) and registry (XLSX, CSV)",
)
async def close_period(
    month: Month, program: ProgramQuery, principal: Principal = Depends(finance)
) -> dict[str, Any]:
    parsed = parse_month(month)
    period = await run_in_threadpool(periods.close_month, program, parsed, closed_by=principal.key_id)
    log.info(
        "period_closed",
        program=program,
        month=month,
        key_id=principal.key_id,
        records=period.row.record_count if period.row is not None else None,
    )
    return period_body(period)


@router.get(
    "/periods/{month}/documents",
    response_model=DocumentsOut,
    summary="The closing documents of a month",
    responses=responses(UnknownProgram),
)
def list_documents(
    month: Month, program: ProgramQuery, principal: Principal = Depends(finance)
) -> dict[str, Any]:
    view = period_body(periods.read_period(program, parse_month(month)))
    return {k: view[k] for k in ("program", "month", "status", "documents")}


@router.get(
    "/periods/{month}/documents/{kind}",
    response_class=StreamingResponse,
    summary="Download a closing document (act.pdf, registry.xlsx, registry.csv)",
    responses={
        **responses(UnknownProgram, PeriodNotClosed),
        **download_response("The file", "application/pdf", "text/csv", MEDIA_TYPES["xlsx"]),
    },
)
def download_document(
    request: Request,
    month: Month,
    kind: Annotated[DocumentKind, Path()],
    program: ProgramQuery,
    principal: Principal = Depends(finance),
) -> StreamingResponse:
    doc = periods.find_document(program, parse_month(month), kind)
    digest = base64.b64encode(bytes.fromhex(doc.sha256)).decode()
    return StreamingResponse(
        periods.iter_document(doc.document_id),
        media_type=download_media_type(request, doc.content_type),
        headers={
            "Content-Disposition": f'attachment; filename="{doc.filename}"',
            "Content-Length": str(doc.size),
            "Repr-Digest": f"sha-256=:{digest}:",
            "X-Content-SHA256": doc.sha256,
        },
    )


_REPORT_BODY = csv_request_body(
    "code,activated_at,amount\nABC-123-XYZ,2026-03-05T10:00:00+05:00,2000.00\n",
    "code[,activated_at][,amount], with or without a header line",
)


@router.post(
    "/reconciliation/partners/{partner}",
    response_model=PartnerReconciliationOut,
    openapi_extra=_REPORT_BODY,
    responses=responses(UnknownPartner, NotCsv),
    summary="Reconcile a partner's report of activated codes (CSV code[,activated_at][,amount])",
)
async def reconcile(
    request: Request,
    partner: Annotated[str, Path(pattern=SLUG)],
    period: Annotated[str, Query(pattern=MONTH_PATTERN, description="Month YYYY-MM")],
    principal: Principal = Depends(finance),
) -> dict:
    report = await csv_upload(request)  # text/csv, or the `file` part of multipart/form-data
    if report is None:
        raise UnsupportedMediaType(
            "send the report as text/csv or multipart/form-data: code[,activated_at][,amount]"
        )
    month = parse_month(period, "query.period")
    result = await run_in_threadpool(reconcile_partner, partner, month, report)
    log.info(
        "partner_reconciled", partner=partner, period=period, key_id=principal.key_id, **result["counts"]
    )
    return result
