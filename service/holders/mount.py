"""Mounts the holders' pages on the app: their router and their static files (/h/static)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.holders.routes import HERE, STATIC, router


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="holders-static")
