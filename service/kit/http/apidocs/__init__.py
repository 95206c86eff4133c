"""The API's documentation pages, /docs (Swagger UI) and /redoc (ReDoc), from files the service ships
(static/vendor/: each library with its licence and where it came from) under the security headers of every
page of the service (service/kit/http/headers.py): its CSP lets the pages load from this origin only.
No CDN: FastAPI's own pages load both from one, without integrity checks.

ReDoc runs without its search box, which needs a worker made from a blob: URL that the CSP refuses
(Swagger UI's filter on /docs searches instead); its "API docs by Redocly" logo, an image on
Redocly's CDN, is refused by the CSP too, and ReDoc then leaves it out."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from service.kit.http.headers import PAGE_HEADERS

HERE = Path(__file__).parent
STATIC = "/docs/static"
_ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"}

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: API (Swagger UI)</title>
<link rel="stylesheet" href="{static}/vendor/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/vendor/swagger-ui/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{static}/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{static}/swagger-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}: API (ReDoc)</title>
<link rel="icon" type="image/png" href="{static}/vendor/swagger-ui/favicon-32x32.png">
</head>
<body>
<redoc spec-url="{openapi}" disable-search="true"></redoc>
<script src="{static}/vendor/redoc/redoc.standalone.js"></script>
</body>
</html>
"""


class _Assets(StaticFiles):
    def file_response(
        self,
        full_path: os.PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_ASSET_HEADERS)
        return response


def install(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """/docs and /redoc on the app (create it with docs_url=None, redoc_url=None)."""
    values = {"title": app.title, "static": STATIC, "openapi": openapi_url}

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(SWAGGER_PAGE.format(**values), headers=PAGE_HEADERS)

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return HTMLResponse(REDOC_PAGE.format(**values), headers=PAGE_HEADERS)

    app.mount(STATIC, _Assets(directory=HERE / "static"), name="apidocs-static")
