"""Partners verify universal cards and exchange them for their certificates; support blocks and
unblocks cards. Card numbers and PINs travel only in request bodies: never in URLs (logged)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import JSONResponse

from service.auth.deps import require
from service.auth.service import Principal
from service.cards import ratelimit, service
from service.cards.schemas import CardDetailsOut, ExchangeIn, ExchangeOut, ReasonIn, VerifyIn, VerifyOut
from service.crypto import get_vault
from service.db import new_session, transaction
from service.errors import PROBLEM_MEDIA_TYPE, forbidden, responses
from service.idempotency import request_fingerprint, run_once, validate_key
from service.settlements.routes import router as settlements_router
from service.strict import reject_unknown_query

cards = APIRouter(prefix="/v1", tags=["cards"], dependencies=[Depends(reject_unknown_query)])

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Unique per operation; replays return the first response (kept 48 h)",
    ),
]
CardRef = Annotated[
    UUID,
    Path(
        description="The id of the redemption that issued the card (a card is never named"
        " by their number in a URL)"
    ),
]


def clock() -> datetime:
    """The routes' notion of now; tests replace it to walk through lock windows and expiry."""
    return datetime.now(UTC)


def _partner_of(principal: Principal) -> str | None:
    return principal.partner if principal.role == "partner" else None


@cards.post(
    "/cards/verify",
    response_model=VerifyOut,
    responses=responses(404, 423, 429),
    summary="Verify a card: balance, expiry, status and your products it may be exchanged for",
)
def verify_card(body: VerifyIn, principal: Principal = Depends(require("partner"))) -> Any:
    now = clock()
    ratelimit.check(principal.key_id, now)
    refusal: service.CommittedRefusal | None = None
    with transaction() as session:
        try:
            return service.verify(
                session,
                body.number,
                body.pin,
                partner=_partner_of(principal),
                now=now,
                api_key_id=principal.api_key_id,
            )
        except service.CommittedRefusal as exc:  # a wrong PIN is counted: commit, then refuse
            refusal = exc
    raise refusal


def _respond(status: int, body: dict, replayed: bool) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(
        body,
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE if status >= 400 else "application/json",
    )


@cards.post(
    "/cards/exchanges",
    status_code=201,
    response_model=ExchangeOut,
    responses=responses(409, 423, 429),
    summary="Exchange (part of) a card's balance for one of your certificates",
)
def create_exchange(
    body: ExchangeIn, idempotency_key: IdempotencyKey, principal: Principal = Depends(require("partner"))
) -> JSONResponse:
    if principal.role != "partner":
        raise forbidden("exchanges are made by a partner, into its own products")
    key = validate_key(idempotency_key, required=True)
    now = clock()
    ratelimit.check(principal.key_id, now)
    # The stored request hash must not let anyone test PINs offline: the card is keyed (HMAC).
    fingerprint = request_fingerprint(
        "POST",
        "/v1/cards/exchanges",
        {"card": get_vault().fingerprint(f"card:{body.number}:{body.pin}").hex(), "sku": body.sku},
    )
    revealed: dict[UUID, tuple[str, str | None]] = {}

    def handler(session) -> tuple[int, dict]:
        try:
            result = service.exchange(
                session,
                body.number,
                body.pin,
                body.sku,
                partner=principal.partner,
                now=now,
                api_key_id=principal.api_key_id,
            )
        except service.CommittedRefusal as refusal:
            return refusal.status, refusal.body()
        revealed[result.out.id] = (result.code, result.pin)
        # The idempotency store keeps the response without the certificate: codes stay encrypted at rest.
        return 201, result.out.model_dump(mode="json", exclude={"certificate": {"code", "pin"}})

    outcome = run_once(api_key_id=principal.api_key_id, key=key, fingerprint=fingerprint, handler=handler)
    out = outcome.body
    if outcome.status == 201:
        exchange_id = UUID(out["id"])
        if not outcome.replayed and exchange_id in revealed:
            code, pin = revealed[exchange_id]
        else:
            with new_session() as session:
                code, pin = service.reveal_certificate(session, exchange_id, principal.partner or "")
        out = {**out, "certificate": {**out["certificate"], "code": code, "pin": pin}}
    return _respond(outcome.status, out, outcome.replayed)


@cards.get(
    "/cards/by-redemption/{card}",
    response_model=CardDetailsOut,
    responses=responses(),
    summary="A card's state, exchanges and audit trail (support)",
)
def read_card(card: CardRef, principal: Principal = Depends(require("support"))) -> CardDetailsOut:
    with new_session() as session:
        return service.card_details(session, card, now=clock())


@cards.post(
    "/cards/by-redemption/{card}/block",
    response_model=CardDetailsOut,
    responses=responses(409),
    summary="Block an active card (support; audited with the reason)",
)
def block_card(
    card: CardRef, body: ReasonIn, principal: Principal = Depends(require("support"))
) -> CardDetailsOut:
    with transaction() as session:
        return service.set_blocked(
            session, card, blocked=True, reason=body.reason, api_key_id=principal.api_key_id, now=clock()
        )


@cards.post(
    "/cards/by-redemption/{card}/unblock",
    response_model=CardDetailsOut,
    responses=responses(409),
    summary="Unblock a blocked card (support; audited with the reason)",
)
def unblock_card(
    card: CardRef, body: ReasonIn, principal: Principal = Depends(require("support"))
) -> CardDetailsOut:
    with transaction() as session:
        return service.set_blocked(
            session, card, blocked=False, reason=body.reason, api_key_id=principal.api_key_id, now=clock()
        )


# What the app includes: the card routes and the partner settlement that follows from them.
router = APIRouter()
router.include_router(cards)
router.include_router(settlements_router)
