"""The partner's desks: the stock page and its code upload (support sees the stock too; partner and
admin upload), and the cashier's card desk (verify a card, exchange it for a certificate). Each
action writes a staff audit row (service/console/audit.py); a refusal's problem is shown as text."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.cards import ratelimit
from service.cards import service as cards
from service.cards.errors import CommittedRefusal
from service.console import audit, dashboard
from service.console.audit import ActionAlreadyDone
from service.console.deps import CARD_DESK, STOCK, UPLOAD, staff, staff_form
from service.console.web import MAX_UPLOAD_BYTES, PATH, Ctx, PageNotFound, render, wants_fragment
from service.kit.config import get_settings
from service.kit.db.engine import new_session, transaction
from service.kit.http.errors import NotFound, Problem
from service.kit.observability.metrics import CODES_IMPORTED
from service.pools import service as pools

router = APIRouter(prefix=PATH, include_in_schema=False)


def _now() -> datetime:
    return datetime.now(UTC)


# --- stock (support, partner, admin) --------------------------------------------------------------


def _stock_partner(ctx: Ctx) -> str | None:
    assert ctx.staff is not None
    return ctx.staff.partner if ctx.staff.role == "partner" else None


def _stock(ctx: Ctx) -> dict[str, Any]:
    settings = get_settings()
    partner = _stock_partner(ctx)
    with new_session() as session:
        lines = pools.stock(
            session,
            partner=partner,
            expiring_days=settings.stock_expiring_days,
            default_threshold=settings.stock_low_threshold,
        )
        runway = {r["sku"]: r for r in dashboard.runway(session, dashboard.Scope(None, partner), _now())}
    return {"lines": lines, "runway": runway}


@router.get("/stock")
def stock_page(ctx: Annotated[Ctx, Depends(staff(*STOCK))]) -> Response:
    assert ctx.staff is not None
    return render(
        ctx,
        "stock.html",
        **_stock(ctx),
        may_upload=ctx.staff.role in ("partner", "admin"),
        result=None,
        error=None,
        oob=False,
    )


def _upload_answer(ctx: Ctx, status: int, **values: Any) -> Response:
    """htmx: the result, and the table above it swapped out of band (its counts changed); a plain
    form post: the whole page with the result."""
    values = {"result": None, "error": None, **values, **_stock(ctx)}
    if wants_fragment(ctx.request):
        return render(ctx, "upload_result.html", status, oob=True, **values)
    return render(ctx, "stock.html", status, may_upload=True, oob=False, **values)


@router.post("/stock/upload")
async def upload_codes(
    ctx: Annotated[Ctx, Depends(staff_form(*UPLOAD))],
    sku: Annotated[str, Form(max_length=64)],
    file: UploadFile | None = None,
) -> Response:
    partner = _stock_partner(ctx)
    if file is None or not file.filename:
        return await run_in_threadpool(_upload_answer, ctx, 422, error=ctx.t("stock.no_file"))
    body = await file.read(MAX_UPLOAD_BYTES + 1)
    filename = (file.filename or "")[:200]

    def run() -> Response:
        details: dict[str, Any] = {"filename": filename, "bytes": len(body)}
        try:
            lines = pools.lines_from_body(body, "text/csv")
            with transaction() as session:
                result = pools.import_codes(
                    session,
                    sku,
                    lines,
                    source="console",
                    filename=filename,
                    sha256=pools.body_sha256(body),
                    partner=partner,
                )
                audit.record(
                    session,
                    ctx.actor,
                    "upload_codes",
                    target=sku,
                    details={
                        **details,
                        "upload_id": result.upload_id,
                        "lines": result.lines,
                        "accepted": result.accepted,
                        "duplicates": result.duplicates,
                        "rejected": result.rejected,
                    },
                )
        except NotFound:
            raise PageNotFound() from None
        except Problem as problem:
            audit.record_refusal(ctx.actor, "upload_codes", target=sku, outcome=problem.code, details=details)
            return _upload_answer(ctx, problem.status, error=ctx.problem_text(problem))
        CODES_IMPORTED.labels(sku=sku).inc(result.accepted)
        return _upload_answer(ctx, 201, result=result)

    if len(body) > MAX_UPLOAD_BYTES:
        return await run_in_threadpool(_upload_answer, ctx, 413, error="> 10 MiB")
    return await run_in_threadpool(run)


# --- card desk (partner cashier) ------------------------------------------------------------------


@router.get("/cards")
def card_desk(ctx: Annotated[Ctx, Depends(staff(*CARD_DESK))]) -> Response:
    return render(ctx, "cards.html", view=None, error=None)


def _desk_result(ctx: Ctx, status: int = 200, **values: Any) -> Response:
    values = {"view": None, "error": None, "exchange": None, "certificate": None, "already": False, **values}
    template = "card_result.html" if wants_fragment(ctx.request) else "cards.html"
    return render(ctx, template, status, **values)


def _card_refusal(ctx: Ctx, action: str, last4: str, problem: Problem) -> Response:
    audit.record_refusal(ctx.actor, action, target=f"card *{last4}", outcome=problem.code)
    return _desk_result(ctx, problem.status, error=ctx.problem_text(problem))


def _card_input(number: str, pin: str) -> tuple[str, str]:
    return "".join(number.split()), pin.strip()


@router.post("/cards/verify")
def verify_card(
    ctx: Annotated[Ctx, Depends(staff_form(*CARD_DESK))],
    number: Annotated[str, Form(max_length=40)] = "",
    pin: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    assert ctx.staff is not None
    number, pin = _card_input(number, pin)
    last4 = number[-4:]
    now = _now()
    try:
        ratelimit.check(f"staff-{ctx.staff.id}", now)
        refusal: Problem | None = None
        with transaction() as session:
            try:
                view = cards.verify(session, number, pin, partner=ctx.staff.partner, now=now, api_key_id=None)
            except CommittedRefusal as exc:  # a wrong PIN is counted: commit, then refuse
                refusal = exc.problem
        if refusal is not None:
            raise refusal
    except Problem as problem:
        return _card_refusal(ctx, "verify_card", last4, problem)
    return _desk_result(ctx, view=view, action_key=secrets.token_urlsafe(16))


@router.post("/cards/exchange")
def exchange_card(
    ctx: Annotated[Ctx, Depends(staff_form(*CARD_DESK))],
    sku: Annotated[str, Form(max_length=64)],
    action_key: Annotated[str, Form(min_length=8, max_length=64)],
    number: Annotated[str, Form(max_length=40)] = "",
    pin: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    assert ctx.staff is not None and ctx.staff.partner is not None
    partner = ctx.staff.partner
    number, pin = _card_input(number, pin)
    last4 = number[-4:]
    now = _now()
    target = f"card *{last4}"
    try:
        ratelimit.check(f"staff-{ctx.staff.id}", now)
        refusal: Problem | None = None
        with transaction() as session:
            try:
                result = cards.exchange(session, number, pin, sku, partner=partner, now=now, api_key_id=None)
            except CommittedRefusal as exc:
                refusal = exc.problem
            else:
                out = result.out
                audit.record(
                    session,
                    ctx.actor,
                    "exchange_card",
                    target=target,
                    action_key=action_key,
                    details={
                        "exchange_id": str(out.id),
                        "sku": sku,
                        "amount": out.amount.amount,
                        "balance_after": out.card.balance.amount,
                        "currency": out.amount.currency,
                    },
                )
        if refusal is not None:
            raise refusal
    except ActionAlreadyDone as done:  # a second click: the first exchange stands, shown again
        exchange_id = uuid.UUID(done.details["exchange_id"])
        with new_session() as session:
            code, cert_pin = cards.reveal_certificate(session, exchange_id, partner)
        return _desk_result(
            ctx, already=True, certificate={"code": code, "pin": cert_pin, "sku": sku}, exchange=None
        )
    except Problem as problem:
        return _card_refusal(ctx, "exchange_card", last4, problem)
    before = {
        "amount": str(_add(out.card.balance.amount, out.amount.amount)),
        "currency": out.amount.currency,
    }
    return _desk_result(
        ctx,
        exchange=out,
        balance_before=before,
        certificate={"code": result.code, "pin": result.pin, "sku": sku},
    )


def _add(a: str, b: str) -> str:
    return str(Decimal(a) + Decimal(b))
