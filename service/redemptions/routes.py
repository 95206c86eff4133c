from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from catalog.model import SLUG
from service.auth.deps import require
from service.auth.service import Principal
from service.db import new_session, transaction
from service.errors import PROBLEM_MEDIA_TYPE, Problem, responses
from service.idempotency import request_fingerprint, run_once, validate_key
from service.pagination import Limit, Page
from service.phones import normalize_msisdn
from service.redemptions import service
from service.redemptions.schemas import RedemptionIn, RedemptionOut, Status
from service.strict import reject_unknown_query
from service.timefmt import Rfc3339

router = APIRouter(
    prefix="/v1", tags=["redemptions"], responses=responses(409), dependencies=[Depends(reject_unknown_query)]
)

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Unique per operation; replays return the first response (kept 48 h)",
    ),
]
OptionalIdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]
RedemptionId = Annotated[UUID, Path(description="Redemption id")]


def scope_of(principal: Principal) -> service.Scope:
    return service.Scope(principal.programs if principal.role == "loyalty" else None)


def _respond(status: int, body: dict, replayed: bool) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(
        body,
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE if status >= 400 else "application/json",
    )


@router.post(
    "/redemptions",
    status_code=201,
    response_model=RedemptionOut,
    summary="Redeem points for a reward (reserved in the same transaction)",
)
def create_redemption(
    body: RedemptionIn, idempotency_key: IdempotencyKey, principal: Principal = Depends(require("loyalty"))
) -> JSONResponse:
    key = validate_key(idempotency_key, required=True)
    fingerprint = request_fingerprint("POST", "/v1/redemptions", body.model_dump(mode="json"))
    outcome = run_once(
        api_key_id=principal.api_key_id,
        key=key,
        fingerprint=fingerprint,
        handler=lambda session: (
            201,
            service.redeem(
                session, body, scope=scope_of(principal), api_key_id=principal.api_key_id
            ).model_dump(mode="json"),
        ),
    )
    return _respond(outcome.status, outcome.body, outcome.replayed)


@router.get("/redemptions/{redemption_id}", response_model=RedemptionOut, summary="One redemption")
def read_redemption(
    redemption_id: RedemptionId, principal: Principal = Depends(require("loyalty", "support"))
) -> RedemptionOut:
    with new_session() as session:
        row = service.get_redemption(session, redemption_id, scope=scope_of(principal))
        from service.catalog.snapshot import get_snapshot

        return service.to_out(get_snapshot(session), row)


def _msisdn(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return normalize_msisdn(value)
    except ValueError as exc:
        raise Problem(
            422,
            "validation_error",
            "Validation failed",
            f"{field}: {exc}",
            errors=[{"field": field, "message": str(exc)}],
        ) from None


@router.get("/redemptions", response_model=Page[RedemptionOut], summary="Find redemptions (newest first)")
def list_redemptions(
    principal: Principal = Depends(require("loyalty", "support")),
    external_id: Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")] = None,
    msisdn: Annotated[str | None, Query(max_length=32)] = None,
    status: Status | None = None,
    program: Annotated[str | None, Query(pattern=SLUG)] = None,
    created_from: Rfc3339 | None = None,
    created_to: Rfc3339 | None = None,
    limit: Limit = 50,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page")] = None,
) -> dict:
    with new_session() as session:
        items = service.find_redemptions(
            session,
            scope=scope_of(principal),
            limit=limit,
            before=cursor,
            external_id=external_id,
            msisdn=_msisdn(msisdn, "query.msisdn"),
            status=status,
            program=program,
            created_from=created_from,
            created_to=created_to,
        )
    return {"items": items, "next_cursor": str(items[-1].id) if len(items) == limit else None}


@router.get(
    "/subscribers/{msisdn}/redemptions",
    response_model=Page[RedemptionOut],
    tags=["operations"],
    summary="A subscriber's rewards (support)",
)
def subscriber_redemptions(
    msisdn: Annotated[str, Path(max_length=32)],
    principal: Principal = Depends(require("support")),
    limit: Limit = 50,
    cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page")] = None,
) -> dict:
    with new_session() as session:
        items = service.find_redemptions(
            session,
            scope=scope_of(principal),
            limit=limit,
            before=cursor,
            msisdn=_msisdn(msisdn, "path.msisdn"),
        )
    return {"items": items, "next_cursor": str(items[-1].id) if len(items) == limit else None}


@router.post(
    "/redemptions/{redemption_id}/cancel",
    response_model=RedemptionOut,
    summary="Cancel while nobody could have used the reward (reversing records)",
)
def cancel_redemption(
    redemption_id: RedemptionId, principal: Principal = Depends(require("loyalty", "support"))
) -> RedemptionOut:
    with transaction() as session:
        return service.cancel(session, redemption_id, scope=scope_of(principal))


@router.post(
    "/redemptions/{redemption_id}/resend",
    status_code=202,
    response_model=RedemptionOut,
    summary=f"Send the reward's SMS again (at most {service.MAX_RESENDS} times)",
)
def resend_redemption(
    request: Request,
    redemption_id: RedemptionId,
    idempotency_key: OptionalIdempotencyKey = None,
    principal: Principal = Depends(require("loyalty", "support")),
) -> JSONResponse:
    key = validate_key(idempotency_key, required=False)

    def handler(session) -> tuple[int, dict]:
        return 202, service.resend(session, redemption_id, scope=scope_of(principal)).model_dump(mode="json")

    if key is None:
        with transaction() as session:
            status, body = handler(session)
        return _respond(status, body, False)
    outcome = run_once(
        api_key_id=principal.api_key_id,
        key=key,
        fingerprint=request_fingerprint("POST", request.url.path, None),
        handler=handler,
    )
    return _respond(outcome.status, outcome.body, outcome.replayed)
