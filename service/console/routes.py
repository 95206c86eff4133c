"""The console's pages. Each handler checks who is signed in and what they may see, then calls the
same domain functions as the API route for the same action; a refusal's problem is shown as text.
Every action that changes something writes a staff audit row (service/console/audit.py)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.cards import ratelimit
from service.cards import service as cards
from service.cards.errors import CardNotFound, CommittedRefusal
from service.catalog.snapshot import get_snapshot
from service.console import accounts, audit, dashboard, i18n, views
from service.console.audit import ActionAlreadyDone, Actor
from service.console.web import (
    HOME,
    LANG_COOKIE,
    LOGIN_CSRF_COOKIE,
    PATH,
    SESSION_COOKIE,
    CsrfRejected,
    Ctx,
    PageForbidden,
    PageNotFound,
    check_csrf,
    client_address,
    locale_of,
    login_csrf,
    redirect,
    render,
    safe_next,
    set_session_cookie,
    staff_ctx,
    wants_fragment,
)
from service.holders import service as holders
from service.kit.config import get_settings
from service.kit.db.engine import driver, new_session, transaction
from service.kit.http.errors import NotFound, Problem
from service.kit.http.strict import parse_month
from service.kit.observability.metrics import CODES_IMPORTED
from service.kit.values.phones import normalize_msisdn
from service.ledger import periods
from service.ledger.reconciliation import reconcile_partner
from service.pools import service as pools
from service.redemptions import service as redemptions
from service.settlements.service import settlement

router = APIRouter(prefix=PATH, include_in_schema=False)

SUPPORT = ("support", "admin")
STOCK = ("support", "partner", "admin")
FINANCE = ("finance", "admin")
EVERYONE = ("support", "finance", "partner", "admin")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024

Csrf = Annotated[str | None, Form()]


def _now() -> datetime:
    return datetime.now(UTC)


def _redemption_scope(ctx: Ctx) -> redemptions.Scope:
    assert ctx.staff is not None
    return redemptions.Scope(ctx.staff.program_scope)


# --- sign-in ---------------------------------------------------------------------------------------


def _login_page(request: Request, *, error: str | None = None, note: str | None = None, status: int = 200):
    token = login_csrf(request)
    ctx = Ctx(request, None, token, locale_of(request), client_address(request))
    response = render(
        ctx,
        "login.html",
        status,
        error=error,
        note=note,
        next_path=safe_next(request.query_params.get("next")) or "",
        email=request.query_params.get("email", ""),
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path=PATH)
    return response


@router.get("/login")
def login_form(request: Request, reason: str | None = None) -> Response:
    ctx_locale = locale_of(request)
    note = None
    if reason == "expired":
        note = i18n.translate(ctx_locale, "login.expired")
    elif reason == "signed_out":
        note = i18n.translate(ctx_locale, "login.signed_out")
    return _login_page(request, note=note)


@router.post("/login")
def login(
    request: Request,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Csrf = None,
    next_path: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    locale = locale_of(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not cookie or not secrets.compare_digest(cookie.encode(), (csrf_token or "").encode()):
        return _login_page(request, error=i18n.translate(locale, "login.csrf"), status=403)
    address = client_address(request)
    now = _now()
    refused: accounts.SignInRefused | None = None
    with transaction() as session:  # a refused attempt is counted and committed
        try:
            signed = accounts.sign_in(session, email, password, address=address, now=now)
            staff = signed.staff
            audit.record(session, Actor(staff, staff.email, address), "sign_in")
        except accounts.SignInRefused as exc:
            refused = exc
    if refused is not None:
        audit.record_refusal(
            Actor(None, email.strip().lower()[:254] or "?", address, account_id=refused.account_id),
            "sign_in",
            target=None,
            outcome=refused.reason,
        )
        if refused.reason == "locked" and refused.locked_until is not None:
            error = i18n.translate(locale, "login.locked", until=i18n.format_time(refused.locked_until))
        else:
            error = i18n.translate(locale, "login.wrong")
        return _login_page(request, error=error)
    response = redirect(safe_next(next_path) or HOME.get(signed.staff.role, PATH + "/dashboard"))
    set_session_cookie(response, request, signed.token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PATH)
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Csrf = None) -> Response:
    ctx = staff_ctx(request)
    check_csrf(ctx, csrf_token)
    with transaction() as session:
        accounts.sign_out(session, request.cookies.get(SESSION_COOKIE, ""))
        audit.record(session, ctx.actor, "sign_out")
    response = redirect(PATH + "/login?reason=signed_out")
    response.delete_cookie(SESSION_COOKIE, path=PATH)
    return response


@router.get("/lang/{locale}")
def switch_language(request: Request, locale: str, next: str | None = None) -> Response:  # noqa: A002
    response = redirect(safe_next(next) or PATH + "/")
    response.set_cookie(
        LANG_COOKIE, i18n.pick_locale(locale), max_age=365 * 86400, samesite="lax", path=PATH, httponly=True
    )
    return response


@router.get("/")
@router.get("")
def home(request: Request) -> Response:
    ctx = staff_ctx(request)
    assert ctx.staff is not None
    return redirect(HOME.get(ctx.staff.role, PATH + "/dashboard"))


# --- subscriber (support) -------------------------------------------------------------------------


@router.get("/subscriber")
def subscriber_form(request: Request) -> Response:
    ctx = staff_ctx(request, *SUPPORT)
    return render(ctx, "subscriber.html", phone="", msisdn=None, items=[], error=None, next_before=None)


@router.post("/subscriber")
def subscriber(
    request: Request,
    phone: Annotated[str, Form(max_length=32)] = "",
    before: Annotated[uuid.UUID | None, Form()] = None,
    csrf_token: Csrf = None,
) -> Response:
    """A search is posted, not put in the URL: a phone in a query string would reach the access log,
    the browser's history and Referer headers, in forms (spaces, brackets) no log mask recognises."""
    ctx = staff_ctx(request, *SUPPORT)
    check_csrf(ctx, csrf_token)
    try:
        msisdn = normalize_msisdn(phone)
    except ValueError:
        return render(
            ctx,
            "subscriber.html",
            422,
            phone=phone,
            msisdn=None,
            items=[],
            error=ctx.t("sub.bad_phone"),
            next_before=None,
        )
    limit = 50
    with new_session() as session:
        items = redemptions.find_redemptions(
            session, scope=_redemption_scope(ctx), limit=limit, before=before, msisdn=msisdn
        )
        zones = {code: p.zone for code, p in get_snapshot(session).programs.items()}
    return render(
        ctx,
        "subscriber.html",
        phone=phone,
        msisdn=msisdn,
        items=items,
        zones=zones,
        error=None,
        next_before=items[-1].id if len(items) == limit else None,
    )


def _redemption_page(ctx: Ctx, redemption_id: uuid.UUID, *, status: int = 200, **flash: Any) -> Response:
    with new_session() as session:
        try:
            row = redemptions.get_redemption(session, redemption_id, scope=_redemption_scope(ctx))
        except NotFound:
            raise PageNotFound() from None
        snap = get_snapshot(session)
        out = redemptions.to_out(snap, row)
        sms = views.sms_attempts(session, redemption_id)
        hooks = views.webhook_events(session, redemption_id)
        card = cards.card_details(session, redemption_id, now=_now()) if row.card_id is not None else None
        zone = snap.programs_by_id[row.program_id].zone
        timeline = views.timeline(session, out, sms, hooks, holders.page_events(session, redemption_id))
    return render(
        ctx,
        "redemption.html",
        status,
        r=out,
        zone=zone,
        timeline=timeline,
        card=card,
        can_cancel=out.status in ("accepted", "failed") or (card is not None and out.status != "cancelled"),
        can_resend=out.status != "cancelled" and out.resend_count < redemptions.MAX_RESENDS,
        message=flash.get("message"),
        error=flash.get("error"),
        confirm_cancel=flash.get("confirm_cancel", False),
    )


_DONE = {
    "resent": "red.resent",
    "cancelled": "red.cancelled",
    "blocked": "card.blocked_ok",
    "unblocked": "card.unblocked_ok",
}


@router.get("/redemptions/{redemption_id}")
def redemption_page(request: Request, redemption_id: uuid.UUID, done: str | None = None) -> Response:
    ctx = staff_ctx(request, *SUPPORT)
    message = ctx.t(_DONE[done]) if done in _DONE else None
    return _redemption_page(ctx, redemption_id, message=message)


@router.get("/redemptions/{redemption_id}/cancel")
def cancel_confirmation(request: Request, redemption_id: uuid.UUID) -> Response:
    ctx = staff_ctx(request, *SUPPORT)
    return _redemption_page(ctx, redemption_id, confirm_cancel=True)


def _act(ctx: Ctx, redemption_id: uuid.UUID, action: str, run, details: dict | None = None) -> Response:
    """Runs a redemption action and its audit row in one transaction; a refusal is shown on the page
    and audited with its code. A redemption outside the agent's scope is a 404 either way."""
    target = str(redemption_id)
    try:
        with transaction() as session:
            extra = run(session) or {}
            audit.record(session, ctx.actor, action, target=target, details={**(details or {}), **extra})
    except NotFound:
        raise PageNotFound() from None
    except Problem as problem:
        audit.record_refusal(ctx.actor, action, target=target, outcome=problem.code, details=details)
        return _redemption_page(ctx, redemption_id, status=problem.status, error=ctx.problem_text(problem))
    return redirect(f"{PATH}/redemptions/{redemption_id}?done={_PAST[action]}")


_PAST = {"resend": "resent", "cancel": "cancelled", "block": "blocked", "unblock": "unblocked"}


@router.post("/redemptions/{redemption_id}/resend")
def resend(request: Request, redemption_id: uuid.UUID, csrf_token: Csrf = None) -> Response:
    ctx = staff_ctx(request, *SUPPORT)
    check_csrf(ctx, csrf_token)

    def run(session) -> dict:
        out = redemptions.resend(session, redemption_id, scope=_redemption_scope(ctx))
        return {"send": out.resend_count}

    return _act(ctx, redemption_id, "resend", run)


@router.post("/redemptions/{redemption_id}/cancel")
def cancel(
    request: Request,
    redemption_id: uuid.UUID,
    csrf_token: Csrf = None,
    confirm: Annotated[str | None, Form()] = None,
) -> Response:
    ctx = staff_ctx(request, *SUPPORT)
    check_csrf(ctx, csrf_token)
    if confirm != "yes":
        return _redemption_page(ctx, redemption_id, confirm_cancel=True)

    def run(session) -> None:
        redemptions.cancel(session, redemption_id, scope=_redemption_scope(ctx))

    return _act(ctx, redemption_id, "cancel", run)


def _card_action(
    request: Request, redemption_id: uuid.UUID, csrf_token: str | None, reason: str, blocked: bool
):
    ctx = staff_ctx(request, *SUPPORT)
    check_csrf(ctx, csrf_token)
    action = "block" if blocked else "unblock"
    reason = " ".join(reason.split())
    if not reason:
        return _redemption_page(ctx, redemption_id, status=422, error=ctx.t("card.reason_needed"))

    def run(session) -> None:
        redemptions.get_redemption(session, redemption_id, scope=_redemption_scope(ctx))  # scope first
        cards.set_blocked(session, redemption_id, blocked=blocked, reason=reason, api_key_id=None, now=_now())

    return _act(ctx, redemption_id, action, run, details={"reason": reason})


@router.post("/redemptions/{redemption_id}/card/block")
def block_card(
    request: Request,
    redemption_id: uuid.UUID,
    csrf_token: Csrf = None,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    return _card_action(request, redemption_id, csrf_token, reason, True)


@router.post("/redemptions/{redemption_id}/card/unblock")
def unblock_card(
    request: Request,
    redemption_id: uuid.UUID,
    csrf_token: Csrf = None,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    return _card_action(request, redemption_id, csrf_token, reason, False)


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
def stock_page(request: Request) -> Response:
    ctx = staff_ctx(request, *STOCK)
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
    request: Request,
    sku: Annotated[str, Form(max_length=64)],
    file: UploadFile | None = None,
    csrf_token: Csrf = None,
) -> Response:
    ctx = await run_in_threadpool(staff_ctx, request, "partner", "admin")
    check_csrf(ctx, csrf_token)
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
def card_desk(request: Request) -> Response:
    ctx = staff_ctx(request, "partner")
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
    request: Request,
    number: Annotated[str, Form(max_length=40)] = "",
    pin: Annotated[str, Form(max_length=12)] = "",
    csrf_token: Csrf = None,
) -> Response:
    ctx = staff_ctx(request, "partner")
    check_csrf(ctx, csrf_token)
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
    request: Request,
    sku: Annotated[str, Form(max_length=64)],
    action_key: Annotated[str, Form(min_length=8, max_length=64)],
    number: Annotated[str, Form(max_length=40)] = "",
    pin: Annotated[str, Form(max_length=12)] = "",
    csrf_token: Csrf = None,
) -> Response:
    ctx = staff_ctx(request, "partner")
    check_csrf(ctx, csrf_token)
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
        view = periods.period_view(code, parsed)
        totals = view.get("totals")
        if totals is None:  # an open month: its totals so far, from the same function the close uses
            program_row = periods.find_program(driver(session), code)
            totals = periods.render_totals(periods.compute_totals(driver(session), program_row.id, parsed))
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
        ended=_now() >= view["ends_at"],
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
    request: Request,
    program: Annotated[str | None, Query(max_length=64)] = None,
    month: Annotated[str | None, Query(max_length=7)] = None,
    done: str | None = None,
) -> Response:
    ctx = staff_ctx(request, *FINANCE)
    return _period_page(ctx, program, month, message=ctx.t("per.closed_ok") if done == "closed" else None)


@router.get("/periods/close")
def close_confirmation(
    request: Request,
    program: Annotated[str, Query(max_length=64)],
    month: Annotated[str, Query(max_length=7)],
) -> Response:
    ctx = staff_ctx(request, *FINANCE)
    return _period_page(ctx, program, month, confirm=True)


@router.post("/periods/close")
def close_month(
    request: Request,
    program: Annotated[str, Form(max_length=64)],
    month: Annotated[str, Form(max_length=7)],
    csrf_token: Csrf = None,
    confirm: Annotated[str | None, Form()] = None,
) -> Response:
    ctx = staff_ctx(request, *FINANCE)
    check_csrf(ctx, csrf_token)
    if confirm != "yes":
        return _period_page(ctx, program, month, confirm=True)
    target = f"{program} {month}"
    assert ctx.staff is not None
    try:
        parsed = parse_month(month)
        # close_period runs its own two transactions (see service/ledger/periods.py); the audit row
        # follows it: a failure in between leaves a closed period whose row says who in closed_by.
        view = periods.close_period(program, parsed, closed_by=f"staff:{ctx.staff.email}")
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
                "act": view.get("act_number"),
                "registry": view.get("registry_number"),
                "records": view.get("record_count"),
            },
        )
    return redirect(f"{PATH}/periods?program={program}&month={month}&done=closed")


@router.get("/periods/{month}/documents/{kind}")
def download_document(
    request: Request, month: str, kind: str, program: Annotated[str, Query(max_length=64)]
) -> Response:
    staff_ctx(request, *FINANCE)
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
    request: Request,
    program: Annotated[str, Form(max_length=64)],
    month: Annotated[str, Form(max_length=7)],
    partner: Annotated[str, Form(max_length=64)],
    file: UploadFile | None = None,
    csrf_token: Csrf = None,
) -> Response:
    ctx = await run_in_threadpool(staff_ctx, request, *FINANCE)
    check_csrf(ctx, csrf_token)
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
            audit.record(session, ctx.actor, "reconcile_partner", target=target, details=result["counts"])
        return _period_page(ctx, program, month, reconciliation=result)

    return await run_in_threadpool(run)


# --- live dashboard (everyone, scoped) ------------------------------------------------------------


def _dashboard_scope(ctx: Ctx, session) -> dashboard.Scope:
    assert ctx.staff is not None
    return dashboard.scope_for(session, ctx.staff.program_scope, ctx.staff.partner)


def _figures(ctx: Ctx) -> dict[str, Any]:
    with new_session() as session:
        scope = _dashboard_scope(ctx, session)
        figures = dashboard.figures(session, scope)
    return {"at": figures.at, **figures.values}


@router.get("/dashboard")
def dashboard_page(request: Request) -> Response:
    ctx = staff_ctx(request, *EVERYONE)
    return render(ctx, "dashboard.html", f=_figures(ctx), zone_name=i18n.DEFAULT_ZONE.key)


@router.get("/dashboard/data")
def dashboard_data(request: Request) -> Response:
    ctx = staff_ctx(request, *EVERYONE, touch=False)  # polling keeps no session alive
    f = _figures(ctx)
    f["at_text"] = i18n.format_time(f["at"], seconds=True)
    f["at"] = f["at"].isoformat()
    f["today_total"] = sum(f["today"].values())
    for line in f["budget"]:
        line["spent_text"] = i18n.format_money(line["spent"], line["currency"])
        line["budget_text"] = i18n.format_money(line["budget"], line["currency"]) if line["budget"] else None
    return JSONResponse(f, headers={"Cache-Control": "no-store"})


# --- audit log (finance, admin) -------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request, before: int | None = None) -> Response:
    ctx = staff_ctx(request, *FINANCE)
    limit = 100
    with new_session() as session:
        rows = audit.recent(session, limit=limit, before=before)
    return render(ctx, "audit.html", rows=rows, next_before=rows[-1].id if len(rows) == limit else None)


__all__ = ["CardNotFound", "CsrfRejected", "PageForbidden", "router"]
