"""`/v1/campaigns`: a draft, its file, its report, the moves of its life and its results."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.auth.deps import require
from service.auth.service import Principal
from service.campaigns import errors, service
from service.campaigns.schemas import (
    CampaignChange,
    CampaignIn,
    CampaignOut,
    CampaignStatus,
    Decision,
    DecisionOut,
    FileOut,
    LinesOut,
    OptOutsIn,
    OptOutsOut,
    ProblemOut,
    Rejection,
    ReportOut,
    SubmissionOut,
)
from service.campaigns.upload import masked_phone
from service.catalog.errors import UnknownOffer, UnknownProgram
from service.catalog.snapshot import get_snapshot
from service.kit.db.engine import driver, new_session, transaction
from service.kit.http.downloads import download_media_type, download_response
from service.kit.http.errors import InvalidMsisdn, PayloadTooLarge, forbidden, responses
from service.kit.http.pagination import Limit, Page, UuidCursor, page, uuid_position
from service.kit.http.strict import reject_unknown_query
from service.kit.reliability.idempotency import (
    IDEMPOTENCY_PROBLEMS,
    OptionalIdempotencyKeyHeader,
    request_fingerprint,
    run_once,
    validate_key,
)
from service.kit.values.money import Money, to_minor
from service.ledger.xlsx import Column, XlsxWriter
from service.redemptions.errors import BudgetExceeded, OfferInactive, TariffNotEligible

router = APIRouter(prefix="/v1", tags=["campaigns"], dependencies=[Depends(reject_unknown_query)])

CampaignId = Annotated[UUID, PathParam(description="Campaign id")]
# A campaign file of a million lines is about 30 MB as CSV; the limit leaves room for wide XLSX.
MAX_UPLOAD_BYTES = 2 * 1024**3 - 1
UPLOAD_MEDIA = {
    "text/csv": "csv",
    "application/jsonl": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/octet-stream": None,
}
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

makers = require("loyalty", "support")
readers = require("loyalty", "support", "finance", "approver")
approvers = require("approver")


def _programs(principal: Principal) -> frozenset[str] | None:
    """The programs a key acts in: its own when it is scoped to some; admin and unscoped keys, all.
    A sandbox key runs no campaign: campaigns are real grants."""
    if principal.sandbox:
        raise forbidden("a sandbox key has no campaigns")
    if principal.role == "admin":
        return None
    return principal.programs or (frozenset() if principal.role == "loyalty" else None)


def actor_of(principal: Principal) -> service.Actor:
    """The person behind the key when it has an owner (maker-checker sees one person in the console
    and through the API), else the key."""
    owner = principal.owner_staff_id
    return service.Actor(
        f"staff:{owner}" if owner is not None else f"key:{principal.api_key_id}",
        principal.key_id,
        principal.role,
        api_key=principal.key_id,
        staff_id=owner,
    )


def _minor(amount: str | None, program: str, session: Any) -> int | None:
    if amount is None:
        return None
    info = get_snapshot(session).programs.get(program)
    return to_minor(amount, info.currency if info else "KZT")


def campaign_out(request_base: str, progress: service.Progress) -> CampaignOut:
    c, lines = progress.campaign, progress.lines
    cur = c.currency
    return CampaignOut(
        id=c.id,
        program=progress.program.code,
        tariff=progress.tariff_code,
        offer=progress.offer_code,
        name=c.name,
        locale=c.locale,
        status=c.status,
        rate_per_second=c.rate_per_second,
        starts_at=c.starts_at,
        budget_cap=Money.of(c.budget_cap_minor, cur) if c.budget_cap_minor is not None else None,
        total=Money.of(c.total_minor, cur),
        spent=Money.of(lines.spent_minor, cur),
        reserved=Money.of(c.reserved_minor, cur),
        eta_seconds=progress.eta_seconds,
        file=FileOut(
            name=c.file_name,
            sha256=c.file_sha256.hex() if c.file_sha256 else None,
            format=c.file_format,
            encoding=c.file_encoding,
            separator=c.file_separator,
        )
        if c.validated_at
        else None,
        report=ReportOut(
            problems=c.problem_count,
            first=[ProblemOut(line=p.line, code=p.code, message=p.message) for p in progress.problems],
            report_url=f"{request_base}/v1/campaigns/{c.id}/report",
        ),
        lines=LinesOut(
            total=c.line_count,
            pending=lines.pending,
            done=lines.done,
            failed=lines.failed,
            cancelled=lines.cancelled,
            without_sms=lines.silent,
        ),
        submission=SubmissionOut(
            needs_approval=bool(c.needs_approval),
            submitted_by=c.submitted_by,
            submitted_at=c.submitted_at,
            file_sha256=c.submitted_sha256.hex() if c.submitted_sha256 else None,
            lines=c.submitted_lines or 0,
            total=Money.of(c.submitted_total_minor or 0, cur),
        )
        if c.submitted_by and c.submitted_at
        else None,
        approval=DecisionOut(by=c.approved_by, at=c.approved_at) if c.approved_by and c.approved_at else None,
        rejection=DecisionOut(by=c.rejected_by, at=c.rejected_at, reason=c.rejection_reason)
        if c.rejected_by and c.rejected_at
        else None,
        created_by=c.created_by,
        created_at=c.created_at,
        updated_at=c.updated_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
    )


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _read(request: Request, campaign_id: UUID, programs: frozenset[str] | None) -> CampaignOut:
    with new_session() as session:
        return campaign_out(_base(request), service.progress(session, campaign_id, programs=programs))


@router.post(
    "/campaigns",
    status_code=201,
    response_model=CampaignOut,
    summary="Create a campaign (a draft; upload its lines next)",
    responses=responses(
        UnknownProgram, UnknownOffer, OfferInactive, TariffNotEligible, *IDEMPOTENCY_PROBLEMS
    ),
)
def create_campaign(
    request: Request,
    body: CampaignIn,
    idempotency_key: OptionalIdempotencyKeyHeader = None,
    principal: Principal = Depends(makers),
) -> Response:
    """With an Idempotency-Key, a retry of the same request answers the first response again (one
    draft), as every creating POST does."""
    programs = _programs(principal)
    key = validate_key(idempotency_key, required=False)

    def handler(session: Session) -> tuple[int, dict[str, Any]]:
        created = _create(session, body, principal, programs)
        progress = service.progress(session, created.id, programs=programs)
        return 201, campaign_out(_base(request), progress).model_dump(mode="json")

    if key is None:
        with transaction() as session:
            status, payload = handler(session)
        return JSONResponse(payload, status_code=status)
    fingerprint = request_fingerprint("POST", "/v1/campaigns", body.model_dump(mode="json"))
    return run_once(
        api_key_id=principal.api_key_id, key=key, fingerprint=fingerprint, handler=handler
    ).response()


def _create(
    session: Session, body: CampaignIn, principal: Principal, programs: frozenset[str] | None
) -> service.Campaign:
    return service.create(
        session,
        program=body.program,
        tariff=body.tariff,
        offer=body.offer,
        name=body.name,
        locale=body.locale,
        budget_cap_minor=_minor(body.budget_cap, body.program, session),
        starts_at=body.starts_at,
        rate_per_second=body.rate_per_second,
        actor=actor_of(principal),
        api_key_id=principal.api_key_id,
        programs=programs,
    )


@router.get(
    "/campaigns",
    response_model=Page[CampaignOut],
    summary="Campaigns, newest first (cursor pagination)",
    responses=responses(),
)
def list_campaigns(
    request: Request,
    principal: Principal = Depends(readers),
    status: CampaignStatus | None = None,
    limit: Limit = 50,
    cursor: UuidCursor = None,
) -> dict[str, Any]:
    programs = _programs(principal)
    with new_session() as session:
        found = service.list_campaigns(
            session, programs=programs, limit=limit + 1, before=uuid_position(cursor), status=status
        )
        items = [campaign_out(_base(request), service.progress(session, c.id, programs=None)) for c in found]
    return page(items, limit, "id")


@router.get(
    "/campaigns/{campaign_id}",
    response_model=CampaignOut,
    summary="A campaign: its state, counts per line state, value spent, rate, ETA and report",
    responses=responses(errors.CampaignNotFound),
)
def read_campaign(
    request: Request, campaign_id: CampaignId, principal: Principal = Depends(readers)
) -> CampaignOut:
    return _read(request, campaign_id, _programs(principal))


@router.patch(
    "/campaigns/{campaign_id}",
    response_model=CampaignOut,
    summary="Change a campaign's name, cap, start or rate (after submission: back to draft)",
    responses=responses(errors.CampaignNotFound, errors.WrongState),
)
def change_campaign(
    request: Request, campaign_id: CampaignId, body: CampaignChange, principal: Principal = Depends(makers)
) -> CampaignOut:
    programs = _programs(principal)
    fields = body.model_dump(exclude_unset=True)
    with transaction() as session:
        current = service.progress(session, campaign_id, programs=programs)
        if "budget_cap" in fields:
            cap = fields.pop("budget_cap")
            fields["budget_cap_minor"] = _minor(cap, current.program.code, session)
        service.change(session, campaign_id, actor=actor_of(principal), programs=programs, fields=fields)
    return _read(request, campaign_id, programs)


_UPLOAD_EXAMPLES = {
    "application/jsonl": '{"phone": "87011234567", "ref": "A-1"}\n',
    "application/x-ndjson": '{"phone": "87011234567", "ref": "A-1"}\n',
    XLSX: "(an XLSX workbook: phone, offer, ref in the first sheet's columns)",
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The lines: phone, optional offer, optional ref (header row optional). CSV in"
        " UTF-8 (with or without BOM) or Windows-1251, `,` or `;`; JSON Lines"
        ' (`{"phone": …, "offer": …, "ref": …}`); or XLSX (first sheet). Up to 1 000 000 lines.',
        "content": {
            media: {
                "schema": {"type": "string", "format": "binary", "contentMediaType": media},
                "example": _UPLOAD_EXAMPLES.get(media, "phone,offer,ref\n87011234567,,A-1\n"),
            }
            for media in UPLOAD_MEDIA
        },
    }
}
_FILENAME = re.compile(r'filename="?([^";]+)"?')


@router.put(
    "/campaigns/{campaign_id}/lines",
    response_model=CampaignOut,
    summary="Upload the draft's lines (replaces any earlier upload) and validate them all",
    openapi_extra=_UPLOAD_BODY,
    responses=responses(errors.CampaignNotFound, errors.NotADraft, errors.UploadRefused, PayloadTooLarge),
)
async def upload_lines(
    request: Request, campaign_id: CampaignId, principal: Principal = Depends(makers)
) -> CampaignOut:
    programs = _programs(principal)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media not in UPLOAD_MEDIA:
        raise errors.UploadRefused(
            f"a campaign file is CSV, JSON Lines or XLSX, not {media}", reason="unknown_format"
        )
    disposition = _FILENAME.search(request.headers.get("content-disposition", ""))
    filename = disposition.group(1) if disposition else None
    with tempfile.TemporaryDirectory(prefix="campaign-") as folder:
        path = Path(folder) / "upload"
        size = 0
        with path.open("wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise PayloadTooLarge("a campaign file is at most 2 GB")
                f.write(chunk)

        def run() -> CampaignOut:
            with transaction() as session:
                progress = service.upload(
                    session,
                    campaign_id,
                    path,
                    filename=filename,
                    content_type=media or None,
                    actor=actor_of(principal),
                    programs=programs,
                )
                return campaign_out(_base(request), progress)

        return await run_in_threadpool(run)


@router.get(
    "/campaigns/{campaign_id}/report",
    summary="The whole validation report as CSV: line, code, message (streamed)",
    response_class=StreamingResponse,
    responses={
        **responses(errors.CampaignNotFound),
        **download_response("The report", "text/csv; charset=utf-8"),
    },
)
def download_report(
    request: Request, campaign_id: CampaignId, principal: Principal = Depends(readers)
) -> StreamingResponse:
    _read(request, campaign_id, _programs(principal))  # 404 outside the key's programs
    return StreamingResponse(
        report_csv(campaign_id),
        media_type=download_media_type(request, "text/csv; charset=utf-8"),
        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign_id}-report.csv"'},
    )


RESULT_COLUMNS = ["line", "ref", "phone", "redemption_id", "status", "redemption_status", "error_code"]


def _result_row(line: service.ResultLine) -> list[Any]:
    return [
        line.line_no,
        line.ref,
        masked_phone(line.msisdn),
        str(line.redemption_id) if line.redemption_id else "",
        line.status,
        line.redemption_status or "",
        line.error_code or line.status_reason or "",
    ]


@router.get(
    "/campaigns/{campaign_id}/results",
    summary="Per line: ref, masked phone, redemption id, status and error code (CSV or XLSX, streamed)",
    response_class=StreamingResponse,
    responses={
        **responses(errors.CampaignNotFound),
        **download_response("The results", "text/csv; charset=utf-8", XLSX),
    },
)
def download_results(
    request: Request,
    campaign_id: CampaignId,
    principal: Principal = Depends(readers),
    format: Annotated[Literal["csv", "xlsx"], Query(description="csv or xlsx")] = "csv",
) -> StreamingResponse:
    _read(request, campaign_id, _programs(principal))
    name = f"campaign-{campaign_id}-results.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    if format == "xlsx":
        return StreamingResponse(
            results_xlsx(campaign_id), media_type=download_media_type(request, XLSX), headers=headers
        )
    return StreamingResponse(
        results_csv(campaign_id),
        media_type=download_media_type(request, "text/csv; charset=utf-8"),
        headers=headers,
    )


def report_csv(campaign_id: UUID) -> Iterator[str]:
    """The whole validation report as CSV (line, code, message), streamed; also the console's."""
    with new_session() as session:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["line", "code", "message"])
        for problem in service.problems(driver(session), campaign_id):
            writer.writerow(["" if problem.line is None else problem.line, problem.code, problem.message])
            if out.tell() > 1 << 16:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()


def results_csv(campaign_id: UUID) -> Iterator[str]:
    """Every line's result as CSV, streamed; also the console's."""
    with new_session() as session:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(RESULT_COLUMNS)
        for line in service.results(driver(session), campaign_id):
            writer.writerow(_result_row(line))
            if out.tell() > 1 << 16:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()


def results_xlsx(campaign_id: UUID) -> Iterator[bytes]:
    """The ledger's streaming XLSX writer (constant memory) into a temporary file, then sent in chunks."""
    columns = [
        Column(name, "int" if name == "line" else "text", 40 if name == "redemption_id" else 14)
        for name in RESULT_COLUMNS
    ]
    with tempfile.TemporaryFile() as f:
        writer = XlsxWriter(f, columns, sheet_title="Results")
        with new_session() as session:
            batch: list[list[str]] = []
            for line in service.results(driver(session), campaign_id):
                batch.append([str(v) for v in _result_row(line)])
                if len(batch) >= 1000:
                    writer.write_rows(batch)
                    batch = []
            writer.write_rows(batch)
        writer.close()
        f.seek(0)
        while chunk := f.read(1 << 16):
            yield chunk


def _move(
    name: str, summary: str, problems: tuple[type[Exception], ...], roles: Any, body: type | None = None
) -> None:
    """POST /v1/campaigns/{id}/<name>: one move of the campaign's life."""

    if body is None:

        def route(
            request: Request, campaign_id: CampaignId, principal: Principal = Depends(roles)
        ) -> CampaignOut:
            programs = _programs(principal)
            with transaction() as session:
                getattr(service, name)(session, campaign_id, actor=actor_of(principal), programs=programs)
            return _read(request, campaign_id, programs)

    elif body is Decision:

        def route(  # type: ignore[misc]
            request: Request,
            campaign_id: CampaignId,
            decision: Decision | None = None,
            principal: Principal = Depends(roles),
        ) -> CampaignOut:
            programs = _programs(principal)
            sha = bytes.fromhex(decision.file_sha256) if decision and decision.file_sha256 else None
            with transaction() as session:
                service.approve(
                    session, campaign_id, actor=actor_of(principal), programs=programs, sha256=sha
                )
            return _read(request, campaign_id, programs)

    else:

        def route(  # type: ignore[misc]
            request: Request,
            campaign_id: CampaignId,
            rejection: Rejection,
            principal: Principal = Depends(roles),
        ) -> CampaignOut:
            programs = _programs(principal)
            with transaction() as session:
                service.reject(
                    session,
                    campaign_id,
                    actor=actor_of(principal),
                    reason=rejection.reason,
                    programs=programs,
                )
            return _read(request, campaign_id, programs)

    route.__name__ = f"{name}_campaign"
    router.post(
        f"/campaigns/{{campaign_id}}/{name}",
        response_model=CampaignOut,
        summary=summary,
        responses=responses(errors.CampaignNotFound, *problems),  # type: ignore[arg-type]
    )(route)


_move(
    "submit",
    "Submit the validated draft (frozen: file hash, lines, value)",
    (errors.WrongState, errors.NotValidated, BudgetExceeded),
    makers,
)
_move(
    "approve",
    "Approve a submitted campaign (a second person; reserves its value against the budget)",
    (errors.WrongState, errors.SamePerson, errors.UnknownPerson, errors.SnapshotChanged, BudgetExceeded),
    approvers,
    Decision,
)
_move(
    "reject",
    "Reject a submitted campaign, with the reason (back to draft)",
    (errors.WrongState, errors.SamePerson, errors.UnknownPerson),
    approvers,
    Rejection,
)
_move("pause", "Pause: no new line runs (within a second)", (errors.WrongState,), makers)
_move("resume", "Resume where the campaign stopped", (errors.WrongState,), makers)
_move("cancel", "Cancel: the lines not yet run never run; those that ran stay", (errors.WrongState,), makers)


@router.post(
    "/programs/{program}/bulk-opt-outs",
    response_model=OptOutsOut,
    summary="Subscribers who get no bulk SMS from the program (their campaign rewards still come)",
    responses=responses(UnknownProgram, InvalidMsisdn),
)
def add_opt_outs(program: str, body: OptOutsIn, principal: Principal = Depends(makers)) -> OptOutsOut:
    with transaction() as session:
        return OptOutsOut(
            changed=service.opt_out(session, program, body.msisdns, programs=_programs(principal))
        )


@router.post(
    "/programs/{program}/bulk-opt-outs/remove",
    response_model=OptOutsOut,
    summary="Subscribers who take bulk SMS from the program again",
    responses=responses(UnknownProgram, InvalidMsisdn),
)
def remove_opt_outs(program: str, body: OptOutsIn, principal: Principal = Depends(makers)) -> OptOutsOut:
    with transaction() as session:
        return OptOutsOut(
            changed=service.opt_in(session, program, body.msisdns, programs=_programs(principal))
        )
