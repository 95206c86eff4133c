"""The landing page (each role's first page) and the live dashboard: its page and the data its
polling fetches, scoped to the person's programs or partner; the poll does not count as activity
for the idle timeout."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from service.console import dashboard, i18n
from service.console.deps import EVERYONE, staff
from service.console.web import HOME, PATH, Ctx, redirect, render
from service.kit.db.engine import new_session

router = APIRouter(prefix=PATH, include_in_schema=False)


@router.get("/")
@router.get("")
def home(ctx: Annotated[Ctx, Depends(staff())]) -> Response:
    assert ctx.staff is not None
    return redirect(HOME.get(ctx.staff.role, PATH + "/dashboard"))


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
def dashboard_page(ctx: Annotated[Ctx, Depends(staff(*EVERYONE))]) -> Response:
    return render(ctx, "dashboard.html", f=_figures(ctx), zone_name=i18n.DEFAULT_ZONE.key)


@router.get("/dashboard/data")
def dashboard_data(
    ctx: Annotated[Ctx, Depends(staff(*EVERYONE, touch=False))],  # polling keeps no session alive
) -> Response:
    f = _figures(ctx)
    f["at_text"] = i18n.format_time(f["at"], seconds=True)
    f["at"] = f["at"].isoformat()
    f["today_total"] = sum(f["today"].values())
    for line in f["budget"]:
        line["spent_text"] = i18n.format_money(line["spent"], line["currency"])
        line["budget_text"] = i18n.format_money(line["budget"], line["currency"]) if line["budget"] else None
    return JSONResponse(f, headers={"Cache-Control": "no-store"})
