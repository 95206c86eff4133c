"""Mounts the console on the app: the routers of its pages (one module per desk, service/console/pages),
its static files, and the handlers that answer a missing session with the sign-in page, a page out of
scope with an HTML 404, another role's page and a forged form with an HTML 403."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.console import web
from service.console.pages import campaigns, dashboard, finance, partner, session, support

PAGES = (session, dashboard, support, partner, finance, campaigns)


def install(app: FastAPI) -> None:
    for page in PAGES:
        app.include_router(page.router)
    app.mount(web.PATH + "/static", StaticFiles(directory=web.HERE / "static"), name="console-static")
    app.add_exception_handler(web.LoginRequired, web.on_login_required)
    app.add_exception_handler(web.PageNotFound, web.on_not_found)
    app.add_exception_handler(web.PageForbidden, web.on_forbidden)
    app.add_exception_handler(web.CsrfRejected, web.on_csrf)
