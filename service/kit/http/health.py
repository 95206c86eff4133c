from __future__ import annotations

import os
from functools import lru_cache

import redis
from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from pydantic import BaseModel
from sqlalchemy import text

from service.kit.config import get_settings
from service.kit.db.engine import get_engine
from service.kit.http.errors import NotReady, ValidationFailed, problem_responses
from service.kit.http.strict import reject_unknown_query

router = APIRouter(tags=["operations"], dependencies=[Depends(reject_unknown_query)])


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


@lru_cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url or "", socket_timeout=1, socket_connect_timeout=1)


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness: the process answers",
    responses=problem_responses(ValidationFailed),
)
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: database and broker reachable",
    responses=problem_responses(ValidationFailed, NotReady),
)
def readyz() -> Health:
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready", and says which
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        _redis().ping()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    if any(v != "ok" for v in checks.values()):
        raise NotReady(", ".join(f"{k}: {v}" for k, v in checks.items()))
    return Health(status="ready", checks=checks)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
