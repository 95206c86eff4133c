from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from psycopg import AsyncConnection
from sqlalchemy.orm import Session

from catalog.model import SLUG
from service.auth.deps import check_role, principal_of, require
from service.auth.openapi import security
from service.auth.service import Principal
from service.catalog.errors import UnknownOffer, UnknownProgram
from service.kit.db.engine import hot_pool, new_session, transaction
from service.kit.http.errors import IdempotencyKeyMissing, InvalidMsisdn, responses
from service.kit.http.pagination import Limit, Page, UuidCursor, page, uuid_position
from service.kit.http.strict import reject_unknown_query
from service.kit.http.validation import json_body
from service.kit.reliability.idempotency import (
    IDEMPOTENCY_PROBLEMS,
    KEY_DESCRIPTION,
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    AtCommit,
    OptionalIdempotencyKeyHeader,
    request_fingerprint,
    required_key,
    run_once,
    run_once_async,
    validate_key,
)
from service.kit.values.phones import (
    MSISDN_DESCRIPTION,
    MSISDN_MAX,
    MSISDN_MIN,
    MSISDN_PATTERN,
    normalize_msisdn,
)
from service.kit.values.timefmt import Rfc3339
from service.pools.errors import OutOfStock
from service.redemptions import errors, service
from service.redemptions.schemas import RedemptionIn, RedemptionOut, Status

router = APIRouter(prefix="/v1", tags=["redemptions"], dependencies=[Depends(reject_unknown_query)])

RedemptionId = Annotated[UUID, Path(description="Redemption id")]


def scope_of(principal: Principal) -> service.Scope:
    """A loyalty key acts in its programs and its world (sandbox or real); support in its programs
    when it is scoped to some, else everywhere; admin everywhere. Staff see both worlds, marked."""
    if principal.role == "loyalty":
        return service.Scope(principal.programs, sandbox=principal.sandbox)
    return service.Scope(principal.program_scope)


# The hottest route reads its request itself, with the framework's rules and error shapes
# (service/kit/http/validation.py), instead of through dependency injection and a body model: the OpenAPI
# operation below says what the framework would have derived.
_REDEMPTION_CONTRACT = {
    "security": security("loyalty"),
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_KEY_LENGTH,
                "pattern": KEY_PATTERN,
                "description": "Unique per operation; replays return the first response (kept 48 h). "
                + KEY_DESCRIPTION,
                "title": "Idempotency-Key",
            },
            "description": "Unique per operation; replays return the first response (kept 48 h). "
            + KEY_DESCRIPTION,
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RedemptionIn"}}},
    },
}
LOYALTY = frozenset({"loyalty"})


@router.post(
    "/redemptions",
    status_code=201,
    response_model=RedemptionOut,
    summary="Redeem points for a reward (reserved in the same transaction)",
    openapi_extra=_REDEMPTION_CONTRACT,
    responses=responses(
        UnknownProgram,
        UnknownOffer,
        errors.OfferInactive,
        errors.TariffNotEligible,
        errors.PointsMismatch,
        errors.LimitExceeded,
        errors.BudgetExceeded,
        OutOfStock,
        errors.DuplicateExternalId,
        InvalidMsisdn,
        IdempotencyKeyMissing,
        *IDEMPOTENCY_PROBLEMS,
    ),
)
async def create_redemption(request: Request) -> Response:
    principal = check_role(await principal_of(request), LOYALTY)
    key = required_key(request.headers.get("idempotency-key"))
    body = json_body(RedemptionIn, await request.body(), request.headers.get("content-type"))
    fingerprint = request_fingerprint("POST", "/v1/redemptions", body.model_dump(mode="json"))
    scope = scope_of(principal)

    async def handler(conn: AsyncConnection[Any]) -> tuple[int, dict, AtCommit | None]:
        out, budget = await service.redeem_async(conn, body, scope=scope, api_key_id=principal.api_key_id)
        return 201, out.model_dump(mode="json"), budget

    stored = await run_once_async(
        await hot_pool(request),
        api_key_id=principal.api_key_id,
        key=key,
        fingerprint=fingerprint,
        handler=handler,
    )
    return stored.response()


@router.get(
    "/redemptions/{redemption_id}",
    response_model=RedemptionOut,
    summary="One redemption",
    responses=responses(),
)
def read_redemption(
    redemption_id: RedemptionId, principal: Principal = Depends(require("loyalty", "support"))
) -> RedemptionOut:
    with new_session() as session:
        return service.read_redemption(session, redemption_id, scope=scope_of(principal))


def _msisdn(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return normalize_msisdn(value)
    except ValueError as exc:
        raise InvalidMsisdn(
            f"{field}: {exc}", errors=[{"field": field, "message": str(exc), "type": InvalidMsisdn.code}]
        ) from None


MsisdnQuery = Annotated[
    str | None,
    Query(
        min_length=MSISDN_MIN, max_length=MSISDN_MAX, pattern=MSISDN_PATTERN, description=MSISDN_DESCRIPTION
    ),
]
MsisdnPath = Annotated[
    str,
    Path(
        min_length=MSISDN_MIN, max_length=MSISDN_MAX, pattern=MSISDN_PATTERN, description=MSISDN_DESCRIPTION
    ),
]


@router.get(
    "/redemptions",
    response_model=Page[RedemptionOut],
    summary="Find redemptions (newest first)",
    responses=responses(InvalidMsisdn),
)
def list_redemptions(
    principal: Principal = Depends(require("loyalty", "support")),
    external_id: Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")] = None,
    msisdn: MsisdnQuery = None,
    status: Status | None = None,
    program: Annotated[str | None, Query(pattern=SLUG)] = None,
    created_from: Rfc3339 | None = None,
    created_to: Rfc3339 | None = None,
    limit: Limit = 50,
    cursor: UuidCursor = None,
) -> dict:
    before = uuid_position(cursor)
    with new_session() as session:
        items = service.find_redemptions(
            session,
            scope=scope_of(principal),
            limit=limit + 1,
            before=before,
            external_id=external_id,
            msisdn=_msisdn(msisdn, "query.msisdn"),
            status=status,
            program=program,
            created_from=created_from,
            created_to=created_to,
        )
    return page(items, limit, "id")


@router.get(
    "/subscribers/{msisdn}/redemptions",
    response_model=Page[RedemptionOut],
    tags=["operations"],
    summary="A subscriber's rewards (support)",
    responses=responses(InvalidMsisdn),
)
def subscriber_redemptions(
    msisdn: MsisdnPath,
    principal: Principal = Depends(require("support")),
    limit: Limit = 50,
    cursor: UuidCursor = None,
) -> dict:
    before = uuid_position(cursor)
    with new_session() as session:
        items = service.find_redemptions(
            session,
            scope=scope_of(principal),
            limit=limit + 1,
            before=before,
            msisdn=_msisdn(msisdn, "path.msisdn"),
        )
    return page(items, limit, "id")


@router.post(
    "/redemptions/{redemption_id}/cancel",
    response_model=RedemptionOut,
    summary="Cancel while nobody could have used the reward (reversing records)",
    responses=responses(errors.NotCancellable),
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
    responses=responses(errors.NotResendable, errors.ResendLimitReached, *IDEMPOTENCY_PROBLEMS),
)
def resend_redemption(
    request: Request,
    redemption_id: RedemptionId,
    idempotency_key: OptionalIdempotencyKeyHeader = None,
    principal: Principal = Depends(require("loyalty", "support")),
) -> Response:
    key = validate_key(idempotency_key, required=False)

    def handler(session: Session) -> tuple[int, dict[str, Any]]:
        return 202, service.resend(session, redemption_id, scope=scope_of(principal)).model_dump(mode="json")

    if key is None:
        with transaction() as session:
            status, body = handler(session)
        return JSONResponse(body, status_code=status)
    fingerprint = request_fingerprint("POST", request.url.path, None)
    return run_once(
        api_key_id=principal.api_key_id, key=key, fingerprint=fingerprint, handler=handler
    ).response()
