"""The campaigns desk: the list of a person's campaigns, a new draft, and a campaign's page with its
file upload and validation report, the submitted snapshot, the moves its state and the person's role
allow (submit, approve or reject, pause, resume, cancel), its progress (refreshed while it runs) and
the report and results downloads. Every move calls the same domain function as /v1/campaigns
(service.campaigns.service) and writes its staff audit row in the move's transaction; a refusal is
shown as text and audited with its code. Support and admin make and run campaigns, the approver role
approves (never the person who submitted: the domain refuses, admins included), finance reads."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, UploadFile
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.campaigns import routes as campaign_routes
from service.campaigns import service as campaigns
from service.campaigns.errors import CampaignNotFound
from service.catalog.snapshot import get_snapshot
from service.console import audit, views
from service.console.deps import CAMPAIGN_APPROVERS, CAMPAIGN_MAKERS, CAMPAIGN_READERS, staff, staff_form
from service.console.web import PATH, Ctx, PageNotFound, redirect, render
from service.kit.db.engine import new_session, transaction
from service.kit.http.errors import Problem
from service.kit.values.money import to_minor

router = APIRouter(prefix=PATH, include_in_schema=False)

RUNNING = ("approved", "running")  # the states whose page refreshes itself
REFRESH_SECONDS = 3
MAX_CAMPAIGN_BYTES = campaign_routes.MAX_UPLOAD_BYTES


def _scope(ctx: Ctx) -> frozenset[str] | None:
    assert ctx.staff is not None
    return ctx.staff.program_scope


def _actor(ctx: Ctx) -> campaigns.Actor:
    """The campaign's actor: the staff account (its id is what the maker-checker rule compares)."""
    assert ctx.staff is not None
    return campaigns.Actor(f"staff:{ctx.staff.id}", ctx.staff.email, ctx.staff.role)


def _programs(session: Session, ctx: Ctx) -> list[dict[str, Any]]:
    """The programs the person may make a campaign in, with their tariffs and offers."""
    assert ctx.staff is not None
    snap = get_snapshot(session)
    out = []
    for code, info in sorted(snap.programs.items()):
        if not info.active or not ctx.staff.sees_program(code):
            continue
        out.append(
            {
                "code": code,
                "name": info.name,
                "tariffs": sorted(t for (pid, t) in snap.tariffs if pid == info.id),
                "offers": sorted(o for (pid, o) in snap.offers if pid == info.id),
            }
        )
    return out


# --- the list and a new draft ---------------------------------------------------------------------


def _list_page(
    ctx: Ctx, *, status: int = 200, error: str | None = None, form: dict | None = None
) -> Response:
    with new_session() as session:
        found = campaigns.list_campaigns(session, programs=_scope(ctx), limit=100)
        items = [campaigns.progress(session, c.id, programs=None) for c in found]
        programs = _programs(session, ctx)
    assert ctx.staff is not None
    return render(
        ctx,
        "campaigns.html",
        status,
        items=items,
        programs=programs,
        may_make=ctx.staff.role in CAMPAIGN_MAKERS,
        error=error,
        form=form or {},
    )


@router.get("/campaigns")
def campaign_list(ctx: Annotated[Ctx, Depends(staff(*CAMPAIGN_READERS))]) -> Response:
    return _list_page(ctx)


@router.post("/campaigns")
def create_campaign(
    ctx: Annotated[Ctx, Depends(staff_form(*CAMPAIGN_MAKERS))],
    program: Annotated[str, Form(max_length=64)],
    tariff: Annotated[str, Form(max_length=64)],
    offer: Annotated[str, Form(max_length=64)],
    name: Annotated[str, Form(max_length=200)] = "",
    locale: Annotated[str, Form(max_length=2)] = "kk",
    budget_cap: Annotated[str, Form(max_length=20)] = "",
    rate_per_second: Annotated[str, Form(max_length=6)] = "",
) -> Response:
    form = {
        "program": program,
        "tariff": tariff,
        "offer": offer,
        "name": name,
        "locale": locale,
        "budget_cap": budget_cap,
        "rate_per_second": rate_per_second,
    }
    name = " ".join(name.split())
    cap_text = budget_cap.strip().replace(" ", "").replace("\u00a0", "").replace(",", ".")
    rate_text = rate_per_second.strip()
    if not name:
        return _list_page(ctx, status=422, error=ctx.t("camp.name_needed"), form=form)
    if locale not in ("ru", "kk", "en"):
        locale = "kk"
    if rate_text and not (rate_text.isdigit() and 1 <= int(rate_text) <= 10_000):
        return _list_page(ctx, status=422, error=ctx.t("camp.bad_rate"), form=form)
    details = {"program": program, "tariff": tariff, "offer": offer, "name": name}
    try:
        with transaction() as session:
            info = get_snapshot(session).programs.get(program)
            currency = info.currency if info else "KZT"
            try:
                cap = to_minor(cap_text, currency) if cap_text else None
            except (ValueError, ArithmeticError):
                return _list_page(ctx, status=422, error=ctx.t("camp.bad_cap"), form=form)
            created = campaigns.create(
                session,
                program=program,
                tariff=tariff,
                offer=offer,
                name=name,
                locale=locale,
                budget_cap_minor=cap,
                starts_at=None,
                rate_per_second=int(rate_text) if rate_text else None,
                actor=_actor(ctx),
                api_key_id=None,
                programs=_scope(ctx),
            )
            audit.record(session, ctx.actor, "campaign_create", target=str(created.id), details=details)
    except Problem as problem:
        audit.record_refusal(ctx.actor, "campaign_create", target=None, outcome=problem.code, details=details)
        return _list_page(ctx, status=problem.status, error=ctx.problem_text(problem), form=form)
    return redirect(f"{PATH}/campaigns/{created.id}?done=created")


# --- a campaign's page ----------------------------------------------------------------------------


def _moves(status: str, role: str) -> list[str]:
    """The buttons the state and the role allow (the domain decides again when one is pressed)."""
    moves: list[str] = []
    if role in CAMPAIGN_MAKERS:
        if status == "draft":
            moves.append("submit")
        if status in ("approved", "running"):
            moves.append("pause")
        if status == "paused":
            moves.append("resume")
        if status not in ("done", "cancelled"):
            moves.append("cancel")
    if role in CAMPAIGN_APPROVERS and status == "submitted":
        moves += ["approve", "reject"]
    return moves


def _read(ctx: Ctx, campaign_id: uuid.UUID) -> tuple[campaigns.Progress, dict[str, str]]:
    """The campaign's progress, and the e-mails of the staff who submitted, approved or rejected it."""
    with new_session() as session:
        try:
            progress = campaigns.progress(session, campaign_id, programs=_scope(ctx))
        except CampaignNotFound:
            raise PageNotFound() from None
        c = progress.campaign
        return progress, views.staff_emails(session, [c.submitted_by, c.approved_by, c.rejected_by])


def _view(ctx: Ctx, read: tuple[campaigns.Progress, dict[str, str]]) -> dict[str, Any]:
    progress, people = read
    c = progress.campaign
    assert ctx.staff is not None
    base = str(ctx.request.base_url).rstrip("/")
    return {
        "c": c,
        "p": progress,
        "out": campaign_routes.campaign_out(base, progress),
        "zone": progress.program.zone,
        "moves": _moves(c.status, ctx.staff.role),
        "may_upload": ctx.staff.role in CAMPAIGN_MAKERS and c.status == "draft",
        "refresh": c.status in RUNNING,
        "refresh_seconds": REFRESH_SECONDS,
        "own_submission": c.submitted_by == _actor(ctx).id,
        "who": lambda ref: f"{people[ref]} ({ref})" if ref in people else (ref or "—"),
    }


_DONE = {
    "created": "camp.created_ok",
    "upload": "camp.uploaded_ok",
    "submit": "camp.submitted_ok",
    "approve": "camp.approved_ok",
    "reject": "camp.rejected_ok",
    "pause": "camp.paused_ok",
    "resume": "camp.resumed_ok",
    "cancel": "camp.cancelled_ok",
}


def _page(ctx: Ctx, campaign_id: uuid.UUID, *, status: int = 200, **flash: Any) -> Response:
    return render(
        ctx,
        "campaign.html",
        status,
        **_view(ctx, _read(ctx, campaign_id)),
        message=flash.get("message"),
        error=flash.get("error"),
        confirm_cancel=flash.get("confirm_cancel", False),
    )


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    ctx: Annotated[Ctx, Depends(staff(*CAMPAIGN_READERS))], campaign_id: uuid.UUID, done: str | None = None
) -> Response:
    return _page(ctx, campaign_id, message=ctx.t(_DONE[done]) if done in _DONE else None)


@router.get("/campaigns/{campaign_id}/progress")
def campaign_progress(
    ctx: Annotated[Ctx, Depends(staff(*CAMPAIGN_READERS, touch=False))], campaign_id: uuid.UUID
) -> Response:
    """The progress section alone, which the page asks for every few seconds while the campaign runs
    (htmx; like the dashboard's polling it does not count as the person's activity)."""
    return render(ctx, "campaign_progress.html", fragment=True, **_view(ctx, _read(ctx, campaign_id)))


def _act(
    ctx: Ctx,
    campaign_id: uuid.UUID,
    action: str,
    run: Callable[[Session], dict[str, Any] | None],
    details: dict[str, Any] | None = None,
) -> Response:
    """A move and its audit row in one transaction; a refusal is shown on the page and audited with
    its code (a campaign outside the person's programs is a 404 either way)."""
    target = str(campaign_id)
    try:
        with transaction() as session:
            extra = run(session) or {}
            audit.record(
                session, ctx.actor, f"campaign_{action}", target=target, details={**(details or {}), **extra}
            )
    except CampaignNotFound:
        raise PageNotFound() from None
    except Problem as problem:
        audit.record_refusal(
            ctx.actor, f"campaign_{action}", target=target, outcome=problem.code, details=details
        )
        return _page(ctx, campaign_id, status=problem.status, error=ctx.problem_text(problem))
    return redirect(f"{PATH}/campaigns/{campaign_id}?done={action}")


@router.post("/campaigns/{campaign_id}/upload")
async def upload(
    ctx: Annotated[Ctx, Depends(staff_form(*CAMPAIGN_MAKERS))],
    campaign_id: uuid.UUID,
    file: UploadFile | None = None,
) -> Response:
    """The file, copied in chunks from the form's spooled part to a temporary file (never whole in
    memory), then read and validated by the domain's upload, as PUT /v1/campaigns/{id}/lines does."""
    if file is None or not file.filename:
        return await run_in_threadpool(_page, ctx, campaign_id, status=422, error=ctx.t("stock.no_file"))
    media = (file.content_type or "").split(";")[0].strip().lower()
    content_type = media if media in campaign_routes.UPLOAD_MEDIA else None
    filename = Path(file.filename).name[:200]
    with tempfile.TemporaryDirectory(prefix="campaign-console-") as folder:
        path = Path(folder) / "upload"
        size = 0
        with path.open("wb") as f:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > MAX_CAMPAIGN_BYTES:
                    return await run_in_threadpool(
                        _page, ctx, campaign_id, status=413, error=ctx.t("camp.too_large")
                    )
                f.write(chunk)

        def run(session: Session) -> dict[str, Any]:
            progress = campaigns.upload(
                session,
                campaign_id,
                path,
                filename=filename,
                content_type=content_type,
                actor=_actor(ctx),
                programs=_scope(ctx),
            )
            c = progress.campaign
            return {
                "sha256": c.file_sha256.hex() if c.file_sha256 else None,
                "lines": c.line_count,
                "problems": c.problem_count,
            }

        return await run_in_threadpool(_act, ctx, campaign_id, "upload", run, {"file": filename})


def _simple(name: str) -> Callable[..., Response]:
    move = getattr(campaigns, name)

    def route(ctx: Ctx, campaign_id: uuid.UUID) -> Response:
        def run(session: Session) -> None:
            move(session, campaign_id, actor=_actor(ctx), programs=_scope(ctx))

        return _act(ctx, campaign_id, name, run)

    return route


_submit, _pause, _resume, _cancel = (_simple(n) for n in ("submit", "pause", "resume", "cancel"))


@router.post("/campaigns/{campaign_id}/submit")
def submit(ctx: Annotated[Ctx, Depends(staff_form(*CAMPAIGN_MAKERS))], campaign_id: uuid.UUID) -> Response:
    return _submit(ctx, campaign_id)


@router.post("/campaigns/{campaign_id}/pause")
def pause(ctx: Annotated[Ctx, Depends(staff_form(*CAMPAIGN_MAKERS))], campaign_id: uuid.UUID) -> Response:
    return _pause(ctx, campaign_id)


@router.post("/campaigns/{campaign_id}/resume")
def resume(ctx: Annotated[Ctx, Depends(staff_form(*CAMPAIGN_MAKERS))], campaign_id: uuid.UUID) -> Response:
    return _resume(ctx, campaign_id)


@router.post("/campaigns/{campaign_id}/cancel")
def cancel(
    ctx: Annotated[Ctx, Depends(staff_form(*CAMPAIGN_MAKERS))],
    campaign_id: uuid.UUID,
    confirm: Annotated[str | None, Form()] = None,
) -> Response:
    if confirm != "yes":
        return _page(ctx, campaign_id, confirm_cancel=True)
    return _cancel(ctx, campaign_id)


@router.post("/campaigns/{campaign_id}/approve")
def approve(
    ctx: Annotated[Ctx, Depends(staff_form(*CAMPAIGN_APPROVERS))],
    campaign_id: uuid.UUID,
    file_sha256: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Approves the snapshot the approver saw: its hash comes back with the form, and the domain
    refuses it if the campaign was submitted again with another file since."""
    try:
        sha = bytes.fromhex(file_sha256) if file_sha256 else None
    except ValueError:
        sha = b"\x00"  # not a hash: never the submitted one

    def run(session: Session) -> None:
        campaigns.approve(session, campaign_id, actor=_actor(ctx), programs=_scope(ctx), sha256=sha)

    return _act(ctx, campaign_id, "approve", run, {"file_sha256": file_sha256 or None})


@router.post("/campaigns/{campaign_id}/reject")
def reject(
    ctx: Annotated[Ctx, Depends(staff_form(*CAMPAIGN_APPROVERS))],
    campaign_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    reason = " ".join(reason.split())
    if not reason:
        return _page(ctx, campaign_id, status=422, error=ctx.t("card.reason_needed"))

    def run(session: Session) -> None:
        campaigns.reject(session, campaign_id, actor=_actor(ctx), reason=reason, programs=_scope(ctx))

    return _act(ctx, campaign_id, "reject", run, {"reason": reason})


# --- downloads (the API's streams) ----------------------------------------------------------------


@router.get("/campaigns/{campaign_id}/report.csv")
def download_report(
    ctx: Annotated[Ctx, Depends(staff(*CAMPAIGN_READERS))], campaign_id: uuid.UUID
) -> StreamingResponse:
    _read(ctx, campaign_id)  # 404 outside the person's programs
    return StreamingResponse(
        campaign_routes.report_csv(campaign_id),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign_id}-report.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/campaigns/{campaign_id}/results")
def download_results(
    ctx: Annotated[Ctx, Depends(staff(*CAMPAIGN_READERS))],
    campaign_id: uuid.UUID,
    format: Annotated[str, Query(pattern="^(csv|xlsx)$")] = "csv",
) -> StreamingResponse:
    _read(ctx, campaign_id)
    headers = {
        "Content-Disposition": f'attachment; filename="campaign-{campaign_id}-results.{format}"',
        "Cache-Control": "no-store",
    }
    if format == "xlsx":
        return StreamingResponse(
            campaign_routes.results_xlsx(campaign_id), media_type=campaign_routes.XLSX, headers=headers
        )
    return StreamingResponse(
        campaign_routes.results_csv(campaign_id), media_type="text/csv; charset=utf-8", headers=headers
    )
