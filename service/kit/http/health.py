from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from pydantic import BaseModel, Field

from service.kit.health import Board, api_board, check_api, readiness
from service.kit.http.errors import NotReady, ValidationFailed, problem_responses
from service.kit.http.strict import reject_unknown_query
from service.kit.supervisor import read_state

router = APIRouter(tags=["operations"], dependencies=[Depends(reject_unknown_query)])


class ComponentHealth(BaseModel):
    state: str = Field(
        description="A dependency: up, down or unknown (not checked yet). A process `rewards serve`"
        " supervises: starting, running, restarting, stopping, stopped or failed"
    )
    since: str = Field(description="When it last changed (RFC 3339, UTC)")
    detail: str | None = Field(
        default=None, description="What is wrong, or what the supervisor does about it"
    )
    restarts: int | None = Field(
        default=None, description="Restarts by `rewards serve` (supervised processes)"
    )
    pid: int | None = None


class Health(BaseModel):
    status: str = Field(
        description="/healthz: ok. /readyz: ready, or degraded (Redis away; redemptions taken)"
    )
    checks: dict[str, str] = {}
    components: dict[str, ComponentHealth] = Field(
        default={},
        description="Each dependency of this API process (database, outbox, broker) with its state and"
        " the time of its last change; under `rewards serve`, also each process it supervises",
    )


def board(request: Request) -> Board:
    """This API process's board of its dependencies (the app's lifespan starts its monitor)."""
    state = request.app.state
    if getattr(state, "health_board", None) is None:
        state.health_board = api_board()
    return state.health_board


def _components(dependencies: Board) -> dict[str, ComponentHealth]:
    found = {name: ComponentHealth(**view) for name, view in dependencies.snapshot().items()}
    supervised = read_state()
    if supervised:
        top = supervised.get("supervisor", {})
        found[top.get("name", "supervisor")] = ComponentHealth(
            state=top.get("state", "unknown"),
            since=top.get("since", ""),
            detail=top.get("detail"),
            pid=top.get("pid"),
        )
        for name, view in supervised.get("components", {}).items():
            found[name] = ComponentHealth(**view)
    return found


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness: the process answers; details of every component it knows of",
    responses=problem_responses(ValidationFailed),
)
def healthz(request: Request) -> Health:
    # Reads what the background checks found: never waits on a dependency, so an outage of the
    # database cannot make an orchestrator restart a healthy API.
    return Health(status="ok", components=_components(board(request)))


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: a redemption can be taken (the database answers, the outbox can be written);"
    " Redis away is `degraded`, still ready",
    responses=problem_responses(ValidationFailed, NotReady),
)
def readyz(request: Request) -> Health:
    dependencies = board(request)
    check_api(dependencies)  # afresh: this is what a probe asks
    verdict = readiness(dependencies)
    checks = {
        name: "ok" if view["state"] == "up" else (view["detail"] or view["state"])
        for name, view in dependencies.snapshot().items()
    }
    if verdict == "unready":
        raise NotReady(", ".join(f"{k}: {v}" for k, v in checks.items()))
    return Health(status=verdict, checks=checks, components=_components(dependencies))


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
