"""The finance desk: the month close of a program (its totals, documents and partners' settlements),
a partner's reconciliation report, and the staff audit log. The close and the reconciliation call
the same domain functions as the API and write a staff audit row."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, UploadFile
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.catalog.snapshot import get_snapshot
from service.console import audit, views
from service.console.deps import FINANCE, staff, staff_form
from service.console.web import MAX_UPLOAD_BYTES, PATH, Ctx, PageNotFound, redirect, render
from service.kit.db.engine import driver, new_session, transaction
from service.kit.http.errors import Problem
from service.kit.http.strict import parse_month
from service.ledger import periods
from service.ledger.reconciliation import reconcile_partner
from service.settlements.service import settlement

router = APIRouter(prefix=PATH, include_in_schema=False)


def _now() -> datetime:
    return datetime.now(UTC)


# --- month close (finance) ------------------------------------------------------------------------


def _default_month(zone) -> str:
    first = datetime.now(UTC).astimezone(zone).date().replace(day=1)
    previous = first - timedelta(days=1)
    return f"{previous:%Y-%m}"


def _period_choice(session, program: str | None, month: str | None) -> tuple[Any, date, str]:
    snap = get_snapshot(session)
    programs = sorted(code for code, p in snap.programs.items() if p.active)
    if not programs:
        raise PageNotFound()
    code = program if program in snap.programs else programs[0]
    info = snap.programs[code]
    try:
        parsed = parse_month(month or _default_month(info.zone))
    except Problem:
        parsed = parse_month(_default_month(info.zone))
    return info, parsed, code


def _period_page(ctx: Ctx, program: str | None, month: str | None, *, status: int = 200, **flash: Any):
    with new_session() as session:
        info, parsed, code = _period_choice(session, program, month)
        snap = get_snapshot(session)
        view = periods.read_period(code, parsed)
        frozen = view.totals
        if frozen is None:  # an open month: its totals so far, from the same function the close uses
            program_row = periods.find_program(driver(session), code)
            frozen = periods.compute_totals(driver(session), program_row.id, parsed)
        totals = periods.render_totals(frozen)
        month_text = f"{parsed:%Y-%m}"
        partner_codes = [c for c, _ in views.partners(session)]
        settlements = [settlement(session, p, month_text) for p in partner_codes]
    return render(
        ctx,
        "periods.html",
        status,
        programs=sorted((c, p.name) for c, p in snap.programs.items() if p.active),
        program=code,
        program_name=info.name,
        zone=info.zone,
        month=month_text,
        view=view,
        totals=totals,
        ended=_now() >= view.ends_at,
        settlements=[
            s for s in settlements if s.records or any(p.cost_to_pay.amount != "0.00" for p in s.products)
        ],
        partners=partner_codes,
        reconciliation=flash.get("reconciliation"),
        message=flash.get("message"),
        error=flash.get("error"),
        confirm=flash.get("confirm", False),
    )


@router.get("/periods")
def periods_page(
    ctx: Annotated[Ctx, Depends(staff(*FINANCE))],
    program: Annotated[str | None, Query(max_length=64)] = None,
    month: Annotated[str | None, Query(max_length=7)] = None,
    done: str | None = None,
) -> Response:
    return _period_page(ctx, program, month, message=ctx.t("per.closed_ok") if done == "closed" else None)


@router.get("/periods/close")
def close_confirmation(
    ctx: Annotated[Ctx, Depends(staff(*FINANCE))],
    program: Annotated[str, Query(max_length=64)],
    month: Annotated[str, Query(max_length=7)],
) -> Response:
    return _period_page(ctx, program, month, confirm=True)


@router.post("/periods/close")
def close_month(
    ctx: Annotated[Ctx, Depends(staff_form(*FINANCE))],
    program: Annotated[str, Form(max_length=64)],
    month: Annotated[str, Form(max_length=7)],
    confirm: Annotated[str | None, Form()] = None,
) -> Response:
    if confirm != "yes":
        return _period_page(ctx, program, month, confirm=True)
    target = f"{program} {month}"
    assert ctx.staff is not None
    try:
        parsed = parse_month(month)
        # close_month runs its own two transactions (see service/ledger/periods.py); the audit row
        # follows it: a failure in between leaves a closed period whose row says who in closed_by.
        view = periods.close_month(program, parsed, closed_by=f"staff:{ctx.staff.email}")
    except Problem as problem:
        audit.record_refusal(ctx.actor, "close_period", target=target, outcome=problem.code)
        return _period_page(ctx, program, month, status=problem.status, error=ctx.problem_text(problem))
    with transaction() as session:
        audit.record(
            session,
            ctx.actor,
            "close_period",
            target=target,
            details={
                "act": view.act_number,
                "registry": view.registry_number,
                "records": view.record_count,
            },
        )
    return redirect(f"{PATH}/periods?program={program}&month={month}&done=closed")


@router.get("/periods/{month}/documents/{kind}", dependencies=[Depends(staff(*FINANCE))])
def download_document(month: str, kind: str, program: Annotated[str, Query(max_length=64)]) -> Response:
    if kind not in periods.KINDS:
        raise PageNotFound()
    try:
        doc = periods.find_document(program, parse_month(month), kind)
    except Problem:
        raise PageNotFound() from None
    return StreamingResponse(
        periods.iter_document(doc.document_id),
        media_type=doc.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{doc.filename}"',
            "Content-Length": str(doc.size),
            "X-Content-SHA256": doc.sha256,
            "Cache-Control": "no-store",
        },
    )


@router.post("/periods/reconcile")
async def reconcile(
    ctx: Annotated[Ctx, Depends(staff_form(*FINANCE))],
    program: Annotated[str, Form(max_length=64)],
    month: Annotated[str, Form(max_length=7)],
    partner: Annotated[str, Form(max_length=64)],
    file: UploadFile | None = None,
) -> Response:
    body = await file.read(MAX_UPLOAD_BYTES + 1) if file is not None else b""

    def run() -> Response:
        target = f"{partner} {month}"
        try:
            if not body:
                return _period_page(ctx, program, month, status=422, error=ctx.t("stock.no_file"))
            result = reconcile_partner(partner, parse_month(month), body)
        except Problem as problem:
            audit.record_refusal(ctx.actor, "reconcile_partner", target=target, outcome=problem.code)
            return _period_page(ctx, program, month, status=problem.status, error=ctx.problem_text(problem))
        with transaction() as session:
            audit.record(
                session, ctx.actor, "reconcile_partner", target=target, details=asdict(result.counts)
            )
        return _period_page(ctx, program, month, reconciliation=result)

    return await run_in_threadpool(run)


# --- audit log (finance, admin) -------------------------------------------------------------------


@router.get("/audit")
def audit_page(ctx: Annotated[Ctx, Depends(staff(*FINANCE))], before: int | None = None) -> Response:
    limit = 100
    with new_session() as session:
        rows = audit.recent(session, limit=limit, before=before)
    return render(ctx, "audit.html", rows=rows, next_before=rows[-1].id if len(rows) == limit else None)
