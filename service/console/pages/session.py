"""The console's sign-in and sign-out, and the language switch. Sign-in is the one form without a
session: its CSRF check is a double-submit cookie; a refused attempt is counted and audited."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from service.console import accounts, audit, i18n
from service.console.audit import Actor
from service.console.deps import staff_form
from service.console.web import (
    HOME,
    LANG_COOKIE,
    LOGIN_CSRF_COOKIE,
    PATH,
    SESSION_COOKIE,
    Ctx,
    client_address,
    locale_of,
    login_csrf,
    redirect,
    render,
    safe_next,
    set_session_cookie,
)
from service.kit.db.engine import transaction

router = APIRouter(prefix=PATH, include_in_schema=False)


Csrf = Annotated[str | None, Form()]


def _now() -> datetime:
    return datetime.now(UTC)


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
        # One message for a wrong password, an unknown e-mail and a disabled account; a throttled try
        # is told when to try again, alike for known and unknown e-mails.
        if refused.reason == "throttled" and refused.locked_until is not None:
            error = i18n.translate(locale, "login.throttled", until=i18n.format_time(refused.locked_until))
        else:
            error = i18n.translate(locale, "login.wrong")
        return _login_page(request, error=error)
    response = redirect(safe_next(next_path) or HOME.get(signed.staff.role, PATH + "/dashboard"))
    set_session_cookie(response, request, signed.token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PATH)
    return response


@router.post("/logout")
def logout(ctx: Annotated[Ctx, Depends(staff_form())]) -> Response:
    with transaction() as session:
        accounts.sign_out(session, ctx.request.cookies.get(SESSION_COOKIE, ""))
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
