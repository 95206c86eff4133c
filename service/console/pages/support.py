"""The support desk: a subscriber's rewards found by phone, a redemption's page with its timeline,
and its resend, cancel, card block/unblock and PIN unlock. Each action calls the same domain function
as the API route for it, writes a staff audit row (service/console/audit.py), and shows a refusal's
problem as text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.responses import Response

from service.cards import service as cards
from service.catalog.snapshot import get_snapshot
from service.console import audit, views
from service.console.deps import SUPPORT, staff, staff_form
from service.console.web import PATH, Ctx, PageNotFound, redirect, render
from service.holders import service as holders
from service.kit.db.engine import new_session, transaction
from service.kit.http.errors import NotFound, Problem
from service.kit.values.phones import normalize_msisdn
from service.redemptions import service as redemptions

router = APIRouter(prefix=PATH, include_in_schema=False)


def _now() -> datetime:
    return datetime.now(UTC)


def _redemption_scope(ctx: Ctx) -> redemptions.Scope:
    assert ctx.staff is not None
    return redemptions.Scope(ctx.staff.program_scope)


# --- subscriber and redemption (support) ---------------------------------------------------------


@router.get("/subscriber")
def subscriber_form(ctx: Annotated[Ctx, Depends(staff(*SUPPORT))]) -> Response:
    return render(ctx, "subscriber.html", phone="", msisdn=None, items=[], error=None, next_before=None)


@router.post("/subscriber")
def subscriber(
    ctx: Annotated[Ctx, Depends(staff_form(*SUPPORT))],
    phone: Annotated[str, Form(max_length=32)] = "",
    before: Annotated[uuid.UUID | None, Form()] = None,
) -> Response:
    """A search is posted, not put in the URL: a phone in a query string would reach the access log,
    the browser's history and Referer headers, in forms (spaces, brackets) no log mask recognises."""
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
        can_cancel = redemptions.cancellable(session, row)  # the API's rule, asked of the domain
    return render(
        ctx,
        "redemption.html",
        status,
        r=out,
        zone=zone,
        timeline=timeline,
        shown_tries=views.shown_tries,
        card=card,
        can_cancel=can_cancel,
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
    "unlocked": "card.unlocked_ok",
}


@router.get("/redemptions/{redemption_id}")
def redemption_page(
    ctx: Annotated[Ctx, Depends(staff(*SUPPORT))], redemption_id: uuid.UUID, done: str | None = None
) -> Response:
    message = ctx.t(_DONE[done]) if done in _DONE else None
    return _redemption_page(ctx, redemption_id, message=message)


@router.get("/redemptions/{redemption_id}/cancel")
def cancel_confirmation(ctx: Annotated[Ctx, Depends(staff(*SUPPORT))], redemption_id: uuid.UUID) -> Response:
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


_PAST = {
    "resend": "resent",
    "cancel": "cancelled",
    "block": "blocked",
    "unblock": "unblocked",
    "unlock": "unlocked",
}


@router.post("/redemptions/{redemption_id}/resend")
def resend(ctx: Annotated[Ctx, Depends(staff_form(*SUPPORT))], redemption_id: uuid.UUID) -> Response:

    def run(session) -> dict:
        out = redemptions.resend(session, redemption_id, scope=_redemption_scope(ctx))
        return {"send": out.resend_count}

    return _act(ctx, redemption_id, "resend", run)


@router.post("/redemptions/{redemption_id}/cancel")
def cancel(
    ctx: Annotated[Ctx, Depends(staff_form(*SUPPORT))],
    redemption_id: uuid.UUID,
    confirm: Annotated[str | None, Form()] = None,
) -> Response:
    if confirm != "yes":
        return _redemption_page(ctx, redemption_id, confirm_cancel=True)

    def run(session) -> None:
        redemptions.cancel(session, redemption_id, scope=_redemption_scope(ctx))

    return _act(ctx, redemption_id, "cancel", run)


def _card_action(ctx: Ctx, redemption_id: uuid.UUID, reason: str, blocked: bool) -> Response:
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
    ctx: Annotated[Ctx, Depends(staff_form(*SUPPORT))],
    redemption_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    return _card_action(ctx, redemption_id, reason, True)


@router.post("/redemptions/{redemption_id}/card/unblock")
def unblock_card(
    ctx: Annotated[Ctx, Depends(staff_form(*SUPPORT))],
    redemption_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    return _card_action(ctx, redemption_id, reason, False)


@router.post("/redemptions/{redemption_id}/card/unlock")
def unlock_card(
    ctx: Annotated[Ctx, Depends(staff_form(*SUPPORT))],
    redemption_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Lifts the card's PIN lock (wrong PINs from several clients) and every client's delay on it, as
    the API's POST /v1/cards/by-redemption/{id}/unlock does; audited here and in the card's events."""
    reason = " ".join(reason.split())
    if not reason:
        return _redemption_page(ctx, redemption_id, status=422, error=ctx.t("card.reason_needed"))

    def run(session) -> None:
        redemptions.get_redemption(session, redemption_id, scope=_redemption_scope(ctx))  # scope first
        cards.unlock(session, redemption_id, reason=reason, api_key_id=None, now=_now())

    return _act(ctx, redemption_id, "unlock", run, details={"reason": reason})
