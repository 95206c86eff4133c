"""The holders' pages: /r/<token> (the link of the reward SMS) and /card (a card's number and PIN).
Server-rendered, phone first, ru/kk/en, nothing loaded from elsewhere. A GET never shows a code and
never changes anything (link previews and mail scanners fetch links first): showing a code, a
certificate, asking for a one-time code and confirming an exchange are POSTs carrying the page's form
token. Every answer carries no-store, no-referrer, noindex and a strict CSP; an unknown, cancelled or
malformed token gets the same 404 page after the same work (one hash, one indexed lookup)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg.rows import class_row
from sqlalchemy.orm import Session

from service.cards.errors import CardLocked, CardNotFound, CommittedRefusal, WrongCardOrPin
from service.cards.service import DEFAULT_ZONE
from service.catalog.snapshot import CatalogSnapshot, get_snapshot
from service.holders import barcodes, ratelimit, service, texts
from service.kit.db.engine import driver, new_session, transaction
from service.kit.http.errors import Problem
from service.kit.security.crypto import derive, get_vault
from service.kit.security.links import token_hash

HERE = Path(__file__).parent
LANG_COOKIE = "rewards_lang"
CARD_CSRF_COOKIE = "rewards_card_form"
FORM_TTL_SECONDS = 12 * 3600
STATIC = "/h/static"

router = APIRouter(include_in_schema=False)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'self';"
    " script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
LOGO_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals.update(money=texts.format_money, localized=texts.localized, STATIC=STATIC)
templates.filters["nobreak"] = texts.nobreak


# --- the request's context ---------------------------------------------------------------------------


class Page:
    """The language, the client and the answers every holder page shares."""

    def __init__(self, request: Request, lang: str | None = None):
        self.request = request
        chosen = lang if lang in texts.LOCALES else None
        self.set_lang = chosen
        self.locale = (
            chosen
            or (
                request.cookies.get(LANG_COOKIE)
                if request.cookies.get(LANG_COOKIE) in texts.LOCALES
                else None
            )
            or texts.from_accept_language(request.headers.get("accept-language"))
            or texts.DEFAULT_LOCALE
        )
        self.address = request.client.host if request.client else None

    def t(self, key: str, **values: Any) -> str:
        return texts.translate(self.locale, key, **values)

    def render(
        self,
        template: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        *,
        lang_path: str | None = None,
        **values: Any,
    ) -> HTMLResponse:
        """`lang_path`: the page the language switch links to (none: no switch, e.g. on the 404 page,
        which must not echo the path it was asked for)."""
        body = templates.get_template(template).render(
            t=self.t,
            locale=self.locale,
            locales=[(code, texts.translate(code, "lang.name")) for code in texts.LOCALES],
            lang_path=lang_path,
            **values,
        )
        response = HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
        if self.set_lang:
            response.set_cookie(
                LANG_COOKIE, self.set_lang, max_age=365 * 86400, samesite="lax", httponly=True
            )
        return response

    def gone(self) -> HTMLResponse:
        return self.render("message.html", 404, title=self.t("gone.title"), text=self.t("gone.text"))

    def limited(self, token: str | None, extra: list[ratelimit.Limit] | None = None) -> HTMLResponse | None:
        wait = ratelimit.check(ratelimit.page_limits(self.address, token) + (extra or []), time.time())
        if wait is None:
            return None
        return self.render(
            "message.html",
            429,
            headers={"Retry-After": str(wait)},
            title=self.t("limited.title"),
            text=self.t("limited.text", seconds=wait),
        )

    def cross_site(self) -> bool:
        """A POST from another site's page is refused: the browser says so in Sec-Fetch-Site, or by an
        Origin naming another host. (Under Referrer-Policy: no-referrer a browser sends `Origin: null`
        for our own forms, so that says nothing; the form token decides then.)"""
        fetch_site = self.request.headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return True
        origin = self.request.headers.get("origin")
        if not origin or origin == "null":
            return False
        return urlsplit(origin).netloc != self.request.headers.get("host", "")


# --- form tokens: a POST must come from a page we served for this token -----------------------------


def _form_key() -> bytes:
    return derive(get_vault().fingerprint_key, b"holder-form")


def form_token(token: str, now: float | None = None) -> str:
    stamp = str(int(now if now is not None else time.time()))
    mac = hmac.new(_form_key(), token_hash(token) + b"|" + stamp.encode(), hashlib.sha256).digest()[:18]
    return f"{stamp}.{base64.urlsafe_b64encode(mac).decode()}"


def form_ok(token: str, offered: str | None, now: float | None = None) -> bool:
    if not offered or "." not in offered or len(offered) > 64:
        return False
    stamp, _, _ = offered.partition(".")
    current = now if now is not None else time.time()
    if not stamp.isdigit() or not 0 <= current - int(stamp) <= FORM_TTL_SECONDS:
        return False
    return hmac.compare_digest(form_token(token, int(stamp)), offered)


# --- the reward page -----------------------------------------------------------------------------


def _context(snap: CatalogSnapshot, reward: service.Reward, token: str, locale: str) -> dict[str, Any]:
    product = snap.products[reward.product_id]
    program = snap.programs_by_id[reward.program_id]
    partner = snap.partners_by_id.get(product.partner_id) if product.partner_id is not None else None
    return {
        "reward": reward,
        "token": token,
        "base": f"/r/{token}",
        "lang_path": f"/r/{token}",
        "form": form_token(token),
        "product": product,
        "product_page": product.page or {},
        "partner": partner,
        "partner_page": (partner.page if partner else None) or {},
        "program": program,
        "title": texts.localized((product.page or {}).get("title"), locale) or product.name,
        "date": lambda value: texts.format_date(value, program.zone),
        "when": lambda value: texts.format_time(value, program.zone),
    }


def _show_page(
    page: Page, session: Session, reward: service.Reward, token: str, **values: Any
) -> HTMLResponse:
    snap = get_snapshot(session)
    context = _context(snap, reward, token, page.locale)
    if reward.is_card:
        context["card"] = service.card_view(session, reward, now=datetime.now(UTC))
        context["products"] = snap.products
        context["partners"] = snap.partners_by_id
        return page.render("card.html", **context, **values)
    return page.render("code.html", **context, **values)


def _find(page: Page, session: Session, token: str) -> service.Reward | HTMLResponse:
    reward = service.find_reward(session, token)
    if reward is None:
        return page.gone()
    if reward.expired(datetime.now(UTC)):
        zone = get_snapshot(session).programs_by_id[reward.program_id].zone
        return page.render(
            "message.html",
            410,
            title=page.t("expired.title"),
            text=page.t("expired.text", date=texts.format_date(reward.expires_at, zone)),
        )
    return reward


@router.get("/r/{token}", response_class=HTMLResponse)
def reward_page(request: Request, token: str, lang: str | None = None) -> Response:
    page = Page(request, lang)
    if (limited := page.limited(token)) is not None:
        return limited
    with new_session() as session:
        found = _find(page, session, token)
        if isinstance(found, HTMLResponse):
            return found
        return _show_page(page, session, found, token)


def _post(request: Request, token: str) -> tuple[Page, HTMLResponse | None]:
    """The page of a POST, or its refusal: over a rate limit (429), or sent from another site (403)."""
    page = Page(request)
    if (limited := page.limited(token)) is not None:
        return page, limited
    if page.cross_site():
        return page, page.render("message.html", 403, title=page.t("problem.form"), text="")
    return page, None


def _refused(page: Page, session: Session, reward: service.Reward, token: str, refused: service.Refused):
    return _show_page(page, session, reward, token, notice=page.t(refused.key, **refused.values))


@router.post("/r/{token}/show", response_class=HTMLResponse)
def show_code(request: Request, token: str, form: Annotated[str | None, Form()] = None) -> Response:
    page, refusal = _post(request, token)
    if refusal is not None:
        return refusal
    with transaction() as session:
        found = _find(page, session, token)
        if isinstance(found, HTMLResponse):
            return found
        if not form_ok(token, form):
            return _show_page(page, session, found, token, notice=page.t("problem.form"))
        if found.is_card:
            return _show_page(page, session, found, token)
        shown = service.reveal_code(session, found, now=datetime.now(UTC))
        if shown is None:
            return page.gone()
        product = get_snapshot(session).products[found.product_id]
        drawn = barcodes.render(shown.code, (product.page or {}).get("barcode"))
        return _show_page(page, session, found, token, shown=shown, barcode=drawn)


@router.post("/r/{token}/certificates/{exchange_id}", response_class=HTMLResponse)
def show_certificate(
    request: Request, token: str, exchange_id: uuid.UUID, form: Annotated[str | None, Form()] = None
) -> Response:
    page, refusal = _post(request, token)
    if refusal is not None:
        return refusal
    with transaction() as session:
        found = _find(page, session, token)
        if isinstance(found, HTMLResponse):
            return found
        if not form_ok(token, form) or not found.is_card:
            return _show_page(page, session, found, token, notice=page.t("problem.form"))
        revealed = service.reveal_certificate(session, found, exchange_id, now=datetime.now(UTC))
        if revealed is None:
            return _show_page(page, session, found, token, notice=page.t("problem.form"))
        product, shown = revealed
        drawn = barcodes.render(shown.code, (product.page or {}).get("barcode"))
        return _show_page(
            page, session, found, token, certificate=(exchange_id, product, shown), barcode=drawn
        )


@router.post("/r/{token}/exchange", response_class=HTMLResponse)
def ask_code(
    request: Request,
    token: str,
    sku: Annotated[str, Form(max_length=64)] = "",
    form: Annotated[str | None, Form()] = None,
) -> Response:
    page, refusal = _post(request, token)
    if refusal is not None:
        return refusal
    with transaction() as session:
        found = _find(page, session, token)
        if isinstance(found, HTMLResponse):
            return found
        if not form_ok(token, form):
            return _show_page(page, session, found, token, notice=page.t("problem.form"))
        try:
            with session.begin_nested():
                sent = service.request_otp(session, found, sku, locale=page.locale, now=datetime.now(UTC))
        except service.Refused as refused:
            return _refused(page, session, found, token, refused)
        return _show_page(page, session, found, token, otp=sent)


@router.post("/r/{token}/exchange/{otp_id}", response_class=HTMLResponse)
def confirm_exchange(
    request: Request,
    token: str,
    otp_id: uuid.UUID,
    code: Annotated[str, Form(max_length=16)] = "",
    form: Annotated[str | None, Form()] = None,
) -> Response:
    page, refusal = _post(request, token)
    if refusal is not None:
        return refusal
    with transaction() as session:
        found = _find(page, session, token)
        if isinstance(found, HTMLResponse):
            return found
        if not form_ok(token, form):
            return _show_page(page, session, found, token, notice=page.t("problem.form"))
        try:
            done = service.confirm_otp(
                session, found, otp_id, code, locale=page.locale, now=datetime.now(UTC)
            )
        except service.Refused as refused:
            # A wrong code's try is committed with this answer; the form stays for the tries left.
            pending = service.pending_otp(session, found, otp_id) if refused.key == "otp.wrong" else None
            otp = None
            if pending is not None:
                row, product = pending
                otp = service.OtpSent(
                    row.id, product, row.amount_minor, product.currency, texts.mask_phone(found.msisdn)
                )
            return _show_page(
                page, session, found, token, otp=otp, notice=page.t(refused.key, **refused.values)
            )
        product = done.product
        drawn = barcodes.render(done.shown.code, (product.page or {}).get("barcode"))
        return _show_page(page, session, found, token, done=done, barcode=drawn)


# --- a card by number and PIN ------------------------------------------------------------------------


def _card_form(page: Page, status: int = 200, notice: str | None = None) -> HTMLResponse:
    csrf = page.request.cookies.get(CARD_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = page.render("entry.html", status, form=csrf, notice=notice, lang_path="/card")
    response.set_cookie(CARD_CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/card")
    return response


@router.get("/card", response_class=HTMLResponse)
def card_entry(request: Request, lang: str | None = None) -> Response:
    page = Page(request, lang)
    if (limited := page.limited(None)) is not None:
        return limited
    return _card_form(page)


@router.post("/card", response_class=HTMLResponse)
def open_card(
    request: Request,
    number: Annotated[str, Form(max_length=40)] = "",
    pin: Annotated[str, Form(max_length=16)] = "",
    form: Annotated[str | None, Form()] = None,
) -> Response:
    page = Page(request)
    if (limited := page.limited(None, ratelimit.card_try_limits(page.address))) is not None:
        return limited
    expected = request.cookies.get(CARD_CSRF_COOKIE)
    if page.cross_site() or not expected or not form or not hmac.compare_digest(expected, form):
        return _card_form(page, 403, page.t("problem.form"))
    number = "".join(ch for ch in number if ch.isdigit())
    pin = pin.strip()
    now = datetime.now(UTC)
    failed: Problem | None = None
    token = ""
    try:
        with transaction() as session:
            try:
                token = service.open_card(session, number, pin, address=page.address, now=now)
            except CommittedRefusal as refusal:  # a wrong PIN is counted: committed, then answered
                failed = refusal.problem
    except (CardNotFound, CardLocked) as problem:
        failed = problem
    if failed is None:
        return RedirectResponse(f"/r/{token}", status_code=303, headers=SECURITY_HEADERS)
    if isinstance(failed, WrongCardOrPin):  # an unknown number too: one answer for both
        left = failed.extensions.get("remaining_attempts", 0)
        return _card_form(page, 422, page.t("entry.wrong", left=left))
    if isinstance(failed, CardLocked):
        until = failed.extensions.get("locked_until") or _lock_end(failed.detail or "")
        at = texts.format_time(datetime.fromisoformat(until), DEFAULT_ZONE) if until else ""
        return _card_form(page, 423, page.t("entry.locked", at=at))
    return _card_form(page, 422, page.t("entry.not_found"))


def _lock_end(detail: str) -> str | None:
    """The lock's end from its message ("... locked until <ISO time>")."""
    _, found, until = detail.rpartition("until ")
    return until.strip() if found else None


# --- logos ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Logo:
    content_type: str
    content: bytes


@router.get("/h/logos/{asset_id}", response_class=Response)
def logo(asset_id: str) -> Response:
    if len(asset_id) != 64 or not all(ch in "0123456789abcdef" for ch in asset_id):
        return Response(status_code=404, headers={"Cache-Control": "no-store"})
    with new_session() as session:
        row = (
            driver(session)
            .cursor(row_factory=class_row(_Logo))
            .execute("SELECT content_type, content FROM catalog_assets WHERE id = %(id)s", {"id": asset_id})
            .fetchone()
        )
    if row is None:
        return Response(status_code=404, headers={"Cache-Control": "no-store"})
    return Response(
        bytes(row.content), media_type=row.content_type, headers={**LOGO_HEADERS, "ETag": f'"{asset_id}"'}
    )
