"""The FastAPI application: routers, the request middleware and problem+json for every error."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio.to_thread
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import service.models  # noqa: F401  (every domain's models mapped before the first session)
from service import openapi_contract as contract
from service.auth import revocations
from service.campaigns.routes import router as campaigns_router
from service.cards.routes import router as cards_router
from service.catalog.routes import router as catalog_router
from service.console.mount import install as install_console
from service.delivery.routes import router as sms_router
from service.events import schemas as events
from service.events.routes import router as events_router
from service.holders.mount import install as install_holders
from service.kit.config import get_settings
from service.kit.db.engine import UNAVAILABLE_ERRORS, unavailable
from service.kit.health import Monitor, api_board, check_api
from service.kit.http import apidocs
from service.kit.http.errors import (
    PROBLEM_MEDIA_TYPE,
    IdempotencyKeyMissing,
    InternalError,
    MalformedJson,
    PayloadTooLarge,
    Problem,
    ProblemDetails,
    ServiceUnavailable,
    field_errors_problem,
)
from service.kit.http.health import router as health_router
from service.kit.observability import tracing
from service.kit.observability.metrics import HTTP_LATENCY, HTTP_REQUESTS
from service.ledger.routes import router as finance_router
from service.pools.routes import router as pools_router
from service.pools.schemas import CodeItem, CodeUploadJson
from service.redemptions.routes import router as redemptions_router
from service.redemptions.schemas import RedemptionIn
from service.settlements.routes import router as settlements_router

log = structlog.get_logger("api")
VERSION = "0.1.0"


def problem_response(problem: Problem, request: Request | None = None) -> Response:
    request_id = request.scope.get("request_id") if request is not None else None
    instance = request.url.path if request is not None else None
    return Response(
        orjson.dumps(problem.body(instance, request_id)),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


class RequestContext:
    """Pure ASGI (no per-request task hop): request id, body size limit, access log, metrics."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        supplied = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if 0 < len(supplied) <= 64 and supplied.isprintable() else uuid.uuid4().hex
        scope["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        limit = self.max_body_bytes

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            problem = PayloadTooLarge(f"the body limit is {limit} bytes")
            response = problem_response(problem)
            await response(scope, receive, send_wrapper)
        else:
            received = 0

            async def receive_limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise PayloadTooLarge(f"the body limit is {limit} bytes")
                return message

            await self.app(scope, receive_limited, send_wrapper)
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        template = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
        HTTP_LATENCY.labels(scope["method"], template).observe(elapsed)
        query = scope.get("query_string", b"").decode("latin-1")
        log.info(
            "request",
            method=scope["method"],
            path=scope["path"],
            query=query or None,
            route=template,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
        )


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


async def _on_problem(request: Request, exc: Problem) -> Response:
    return problem_response(exc, request)


async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if any(e.get("type") == "missing" and tuple(e["loc"]) == ("header", "Idempotency-Key") for e in errors):
        return problem_response(
            IdempotencyKeyMissing(
                "this request needs an Idempotency-Key header",
            ),
            request,
        )
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(MalformedJson("the body is not valid JSON"), request)
    # Field errors name the field and the rule, never echo the input (it may be a code or a PIN).
    field_errors = [{"field": _field(e["loc"]), "message": e["msg"], "type": e["type"]} for e in errors]
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in field_errors[:5])
    return problem_response(field_errors_problem(field_errors, detail), request)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 404:
        detail = "no such resource"
    elif exc.status_code == 405:
        # Starlette names only the first route that matched the path; a path may have several.
        path = request.url.path
        allowed = sorted(
            {
                m
                for r in request.app.routes
                if getattr(r, "path_regex", None) is not None and r.path_regex.match(path)
                for m in (getattr(r, "methods", None) or ())
            }
        )
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        detail = f"allowed: {', '.join(allowed)}"
    problem = Problem.of(exc.status_code, code, code.replace("_", " ").capitalize(), detail, headers=headers)
    return problem_response(problem, request)


# Seconds a client should wait before retrying a request the database could not serve.
DATABASE_RETRY_AFTER = 3


def _database_unavailable(request: Request, exc: Exception) -> Response:
    # One line, no traceback: while the database is away every request says the same thing.
    log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
    return problem_response(
        ServiceUnavailable(
            "the database is unavailable; retry shortly with the same Idempotency-Key",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        ),
        request,
    )


async def _on_database_error(request: Request, exc: Exception) -> Response:
    if unavailable(exc):
        return _database_unavailable(request, exc)
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    if unavailable(exc):  # raised from a database error under another name
        return _database_unavailable(request, exc)
    log.error("unhandled_error", exc_info=exc, path=request.url.path)
    return problem_response(
        InternalError(
            "something went wrong on our side; quote the request_id to support",
        ),
        request,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI):
    anyio.to_thread.current_default_thread_limiter().total_tokens = get_settings().api_threads
    revocations.listen(get_settings().database_url)  # revoked keys leave every process's cache at once
    app.state.db_pool = None  # opened by the first request that needs it (see hot_pool)
    app.state.db_pool_lock = asyncio.Lock()
    # What exists now (the app, its routes and schemas, the libraries: some 220,000 objects) lives as
    # long as the process: frozen, the collector stops walking it. Each full collection otherwise
    # stopped the event loop, and every request in flight, for about 100 ms (measured here).
    gc.collect()
    gc.freeze()
    # Its dependencies, checked in the background for /healthz and the metrics (/readyz checks afresh).
    app.state.health_board = api_board()
    monitor = Monitor(app.state.health_board, partial(check_api, app.state.health_board)).start()
    try:
        yield
    finally:
        monitor.stop()
        if app.state.db_pool is not None:
            await app.state.db_pool.close()
            app.state.db_pool = None


def create_app() -> FastAPI:
    app = FastAPI(
        title="Reward fulfillment service",
        version=VERSION,
        description="Turns loyalty points into partner codes and universal gift cards, delivered by SMS. "
        "Errors are RFC 9457 problem+json with a stable `code`.",
        lifespan=_lifespan,
        generate_unique_id_function=contract.operation_id,
        docs_url=None,  # /docs and /redoc from the files the service ships (service/kit/http/apidocs)
        redoc_url=None,
    )
    apidocs.install(app)
    app.include_router(health_router)
    app.include_router(catalog_router)
    app.include_router(pools_router)
    app.include_router(redemptions_router)
    app.include_router(finance_router)
    app.include_router(sms_router)
    app.include_router(events_router)
    events.declare(app)
    app.include_router(cards_router)
    app.include_router(settlements_router)
    app.include_router(campaigns_router)
    install_console(app)  # the staff console under /console (service/console)
    install_holders(app)  # the holders' reward pages, /r/<token> and /card (service/holders)
    app.add_exception_handler(Problem, _on_problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    for database_error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(database_error, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(RequestContext, max_body_bytes=get_settings().max_body_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            webhooks=app.webhooks.routes,
            openapi_version="3.1.0",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ProblemDetails, CodeUploadJson, CodeItem, RedemptionIn):
            definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in definition.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components.setdefault(model.__name__, definition)
        app.openapi_schema = contract.finish(schema, app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    tracing.instrument_app(app)
    return app
