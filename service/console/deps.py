"""FastAPI dependencies that give a console page its signed-in staff member, checked against the roles
that may use the page, and for a form POST the session's CSRF token:

    def page(ctx: Annotated[Ctx, Depends(staff(*SUPPORT))]) -> Response: ...
    def action(ctx: Annotated[Ctx, Depends(staff_form(*SUPPORT))]) -> Response: ...

Without a live session a page answers with the sign-in page (web.LoginRequired), with a role not in
`roles` an HTML 403 (web.PageForbidden), and a form whose token is not the session's an HTML 403
(web.CsrfRejected); service.console.mount installs the handlers. The dependencies are plain
functions, so FastAPI runs them in its thread pool, for async pages too (a session is a database
transaction)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Form, Request

from service.console.web import Ctx, check_csrf, staff_ctx

# Who may use which desk (admin may use every page but the card desk, which is a partner's).
SUPPORT = ("support", "admin")
STOCK = ("support", "partner", "admin")
UPLOAD = ("partner", "admin")
CARD_DESK = ("partner",)
FINANCE = ("finance", "admin")
EVERYONE = ("support", "finance", "partner", "admin")
# Campaigns: support and admin make and run them, a second person with the approver role approves
# (never the submitter, whatever their role: the domain refuses), finance reads them.
CAMPAIGN_MAKERS = ("support", "admin")
CAMPAIGN_APPROVERS = ("approver",)
CAMPAIGN_READERS = ("support", "admin", "approver", "finance")


def staff(*roles: str, touch: bool = True) -> Callable[[Request], Ctx]:
    """The signed-in person's context, for one of `roles` (none given: anyone signed in). The request
    counts as the person's activity for the idle timeout unless `touch` is False (the dashboard's
    polling)."""

    def signed_in(request: Request) -> Ctx:
        return staff_ctx(request, *roles, touch=touch)

    return signed_in


def staff_form(*roles: str) -> Callable[[Request, str | None], Ctx]:
    """As `staff`, for a form POST: then the session's CSRF token, from the form's `csrf_token` field
    or the `X-CSRF-Token` header (htmx), compared in constant time."""

    def signed_in_form(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> Ctx:
        ctx = staff_ctx(request, *roles)
        check_csrf(ctx, csrf_token)
        return ctx

    return signed_in_form
