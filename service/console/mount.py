"""Mounts the console on the app: its router, its static files, and the handlers that answer a
missing session with the sign-in page and a page out of scope with an HTML 404."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.console import web
from service.console.routes import router


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(web.PATH + "/static", StaticFiles(directory=web.HERE / "static"), name="console-static")
    app.add_exception_handler(web.LoginRequired, web.on_login_required)
    app.add_exception_handler(web.PageNotFound, web.on_not_found)
    app.add_exception_handler(web.PageForbidden, web.on_forbidden)
    app.add_exception_handler(web.CsrfRejected, web.on_csrf)
