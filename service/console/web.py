"""What every console page shares: the signed-in person (or a redirect to the sign-in page), the
CSRF check, the language, the templates, and the HTML answers for 404 and 403."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.console import i18n
from service.console.accounts import ActiveSession, Staff, resume
from service.console.audit import Actor
from service.kit.db.engine import transaction
from service.kit.http.errors import Problem
from service.kit.http.headers import PAGE_HEADERS
from service.kit.observability.logging import mask_text

HERE = Path(__file__).parent
SESSION_COOKIE = "rewards_console"
LOGIN_CSRF_COOKIE = "rewards_console_login"
LANG_COOKIE = "rewards_console_lang"
PATH = "/console"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a code file or a partner's report

HOME = {
    "support": "/console/subscriber",
    "finance": "/console/periods",
    "partner": "/console/cards",
    "approver": "/console/campaigns",
}
NAV = (  # (path, label, roles)
    ("/console/subscriber", "nav.subscriber", ("support", "admin")),
    ("/console/stock", "nav.stock", ("support", "partner", "admin")),
    ("/console/cards", "nav.cards", ("partner",)),
    ("/console/periods", "nav.periods", ("finance", "admin")),
    ("/console/campaigns", "nav.campaigns", ("support", "admin", "approver", "finance")),
    ("/console/dashboard", "nav.dashboard", ("support", "finance", "partner", "admin")),
    ("/console/audit", "nav.audit", ("finance", "admin")),
)


class ConsoleSettings(BaseSettings):
    """CONSOLE_IDLE_MINUTES: a session unused this long ends. CONSOLE_SECURE_COOKIE: `auto` marks the
    cookie Secure when the request came over TLS (as the ASGI server reports it, behind a proxy with
    --proxy-headers), `always` whatever the scheme (a TLS-terminating proxy that does not say so)."""

    model_config = SettingsConfigDict(env_prefix="CONSOLE_", env_file=".env", extra="ignore")
    idle_minutes: int = 30
    secure_cookie: str = "auto"


def settings() -> ConsoleSettings:
    return ConsoleSettings()


# --- answers that are not the page asked for -------------------------------------------------------


class LoginRequired(Exception):
    def __init__(self, next_path: str, reason: str | None = None):
        self.next_path = next_path
        self.reason = reason


class PageNotFound(Exception):
    pass


class PageForbidden(Exception):
    pass


class CsrfRejected(Exception):
    pass


def safe_next(value: str | None) -> str | None:
    """Only a path of the console itself: never another site (no open redirect)."""
    if value and value.startswith(PATH + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return None


# --- the request's context -------------------------------------------------------------------------


@dataclass
class Ctx:
    request: Request
    staff: Staff | None
    csrf_token: str
    locale: str
    address: str | None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def t(self, key: str, **values: Any) -> str:
        return i18n.translate(self.locale, key, **values)

    @property
    def actor(self) -> Actor:
        assert self.staff is not None
        return Actor(self.staff, self.staff.email, self.address)

    def problem_text(self, problem: Problem) -> str:
        key = f"problem.{problem.code}"
        if key in i18n.MESSAGES:
            values = {k: v for k, v in problem.extensions.items() if isinstance(v, str | int)}
            return self.t(key, detail=problem.detail or "", **values)
        return problem.detail or problem.title


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def locale_of(request: Request) -> str:
    return i18n.pick_locale(request.cookies.get(LANG_COOKIE))


def _session(request: Request, touch: bool = True) -> ActiveSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 128:
        return None
    with transaction() as session:
        return resume(
            session,
            token,
            idle=timedelta(minutes=settings().idle_minutes),
            now=datetime.now(UTC),
            touch=touch,
        )


def staff_ctx(request: Request, *roles: str, touch: bool = True) -> Ctx:
    """The signed-in person's context; redirects to sign-in without a live session, 403 without
    one of `roles` (admin may use every page but the card desk, which is a partner's)."""
    active = _session(request, touch)
    if active is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        expired = SESSION_COOKIE in request.cookies
        raise LoginRequired(path if request.method == "GET" else PATH + "/", "expired" if expired else None)
    if roles and active.staff.role not in roles:
        raise PageForbidden()
    return Ctx(request, active.staff, active.csrf_token, locale_of(request), client_address(request))


def check_csrf(ctx: Ctx, token: str | None) -> None:
    header = ctx.request.headers.get("x-csrf-token")
    offered = token or header or ""
    if not hmac.compare_digest(offered.encode(), ctx.csrf_token.encode()):
        raise CsrfRejected()


def wants_fragment(request: Request) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


# --- templates -------------------------------------------------------------------------------------

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals.update(
    money=i18n.format_money,
    money_of=i18n.money_of,
    when=i18n.format_time,
    count=i18n.format_count,
    mask_phone=i18n.mask_phone,
    masked=lambda value: mask_text(str(value)) if value is not None else "",
    LOCALES=i18n.LOCALES,
)

SECURITY_HEADERS = PAGE_HEADERS  # the same for the API's documentation pages (service/kit/http/headers.py)


def render(ctx: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    staff = ctx.staff
    nav = [(path, label) for path, label, roles in NAV if staff and staff.role in roles]
    body = templates.get_template(template).render(
        t=ctx.t,
        locale=ctx.locale,
        staff=staff,
        csrf_token=ctx.csrf_token,
        nav=nav,
        path=ctx.request.url.path,
        decimal=lambda value: str(value) if ctx.locale == "en" else str(value).replace(".", ","),
        here=quote(ctx.request.url.path + (f"?{ctx.request.url.query}" if ctx.request.url.query else "")),
        **values,
    )
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **ctx.extra_headers})


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def secure_cookie(request: Request) -> bool:
    mode = settings().secure_cookie
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure_cookie(request),
        path=PATH,
    )


def login_csrf(request: Request) -> str:
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)


# --- exception handlers (installed on the app by service.console.install) -------------------------


def _bare_ctx(request: Request) -> Ctx:
    return Ctx(request, None, "", locale_of(request), client_address(request))


async def on_login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    target = f"{PATH}/login?next={quote(exc.next_path, safe='')}"
    if exc.reason:
        target += f"&reason={exc.reason}"
    if request.headers.get("hx-request") == "true":  # htmx follows HX-Redirect with a full page load
        return Response(status_code=401, headers={"HX-Redirect": target, "Cache-Control": "no-store"})
    return redirect(target)


async def on_not_found(request: Request, exc: Exception) -> Response:
    ctx = _bare_ctx(request)
    return render(ctx, "error.html", 404, title=ctx.t("error.not_found"), text=ctx.t("error.not_found_text"))


async def on_forbidden(request: Request, exc: Exception) -> Response:
    ctx = _bare_ctx(request)
    return render(ctx, "error.html", 403, title=ctx.t("error.forbidden"), text=ctx.t("error.forbidden_text"))


async def on_csrf(request: Request, exc: Exception) -> Response:
    ctx = _bare_ctx(request)
    return render(ctx, "error.html", 403, title=ctx.t("error.forbidden"), text=ctx.t("login.csrf"))
