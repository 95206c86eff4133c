"""Partners verify universal cards and exchange them for their certificates; support blocks and
unblocks cards. Card numbers and PINs travel only in request bodies: never in URLs (logged)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from sqlalchemy.orm import Session

from service.auth.deps import require
from service.auth.openapi import security
from service.auth.service import Principal
from service.cards import errors, ratelimit, service
from service.cards.lockout import CardClient
from service.cards.schemas import CardDetailsOut, ExchangeIn, ExchangeOut, ReasonIn, VerifyIn, VerifyOut
from service.catalog.errors import UnknownProduct
from service.kit.db.engine import new_session, transaction
from service.kit.http.errors import (
    IdempotencyKeyMissing,
    InvalidCardNumber,
    Problem,
    RateLimited,
    forbidden,
    responses,
)
from service.kit.http.strict import reject_unknown_query
from service.kit.reliability.idempotency import (
    IDEMPOTENCY_PROBLEMS,
    IdempotencyKeyHeader,
    request_fingerprint,
    required_key,
    run_once,
)
from service.kit.security.crypto import get_vault
from service.pools.errors import OutOfStock

router = APIRouter(prefix="/v1", tags=["cards"], dependencies=[Depends(reject_unknown_query)])

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


def _client_of(principal: Principal) -> CardClient:
    """Wrong PINs are counted per partner (all its keys and cashiers as one), per key for admin."""
    if principal.role == "partner" and principal.partner:
        return CardClient.partner(principal.partner)
    return CardClient.staff(principal.key_id)


@router.post(
    "/cards/verify",
    response_model=VerifyOut,
    responses=responses(
        InvalidCardNumber,
        errors.WrongCardOrPin,
        errors.CardLocked,
        errors.CardBlocked,
        RateLimited,
    ),
    summary="Verify a card: balance, expiry, status and your products it may be exchanged for",
)
def verify_card(body: VerifyIn, principal: Principal = Depends(require("partner"))) -> Any:
    now = clock()
    ratelimit.check(principal.key_id, now)
    refusal: Problem | None = None
    with transaction() as session:
        try:
            return service.verify(
                session,
                body.number,
                body.pin,
                partner=_partner_of(principal),
                now=now,
                api_key_id=principal.api_key_id,
                client=_client_of(principal),
            )
        except errors.CommittedRefusal as exc:  # a wrong PIN is counted: commit, then refuse
            refusal = exc.problem
    raise refusal


@router.post(
    "/cards/exchanges",
    status_code=201,
    response_model=ExchangeOut,
    responses=responses(
        UnknownProduct,
        InvalidCardNumber,
        errors.WrongCardOrPin,
        errors.CardLocked,
        errors.CardBlocked,
        errors.CardCancelled,
        errors.CardExpired,
        errors.CardExhausted,
        errors.NotExchangeable,
        errors.InsufficientBalance,
        OutOfStock,
        RateLimited,
        IdempotencyKeyMissing,
        *IDEMPOTENCY_PROBLEMS,
    ),
    summary="Exchange (part of) a card's balance for one of your certificates",
    openapi_extra={"security": security("partner", admin=False)},  # admin has no products of its own
)
def create_exchange(
    body: ExchangeIn,
    idempotency_key: IdempotencyKeyHeader,
    principal: Principal = Depends(require("partner")),
) -> Response:
    if principal.role != "partner":
        raise forbidden("exchanges are made by a partner, into its own products")
    key = required_key(idempotency_key)
    now = clock()
    ratelimit.check(principal.key_id, now)
    # The stored request hash must not let anyone test PINs offline: the card is keyed (HMAC).
    fingerprint = request_fingerprint(
        "POST",
        "/v1/cards/exchanges",
        {"card": get_vault().fingerprint(f"card:{body.number}:{body.pin}").hex(), "sku": body.sku},
    )
    revealed: dict[UUID, tuple[str, str | None]] = {}

    def handler(session: Session) -> tuple[int, dict[str, Any]]:
        try:
            result = service.exchange(
                session,
                body.number,
                body.pin,
                body.sku,
                partner=principal.partner or "",
                now=now,
                api_key_id=principal.api_key_id,
                client=_client_of(principal),
            )
        except errors.CommittedRefusal as refusal:
            return refusal.problem.status, refusal.problem.body()
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
    return replace(outcome, body=out).response()


@router.get(
    "/cards/by-redemption/{card}",
    response_model=CardDetailsOut,
    responses=responses(errors.CardNotFound),
    summary="A card's state, exchanges and audit trail (support)",
)
def read_card(card: CardRef, principal: Principal = Depends(require("support"))) -> CardDetailsOut:
    with new_session() as session:
        return service.card_details(session, card, now=clock(), programs=principal.program_scope)


@router.post(
    "/cards/by-redemption/{card}/block",
    response_model=CardDetailsOut,
    responses=responses(errors.CardNotFound, errors.CardNotBlockable),
    summary="Block an active card (support; audited with the reason)",
)
def block_card(
    card: CardRef, body: ReasonIn, principal: Principal = Depends(require("support"))
) -> CardDetailsOut:
    with transaction() as session:
        return service.set_blocked(
            session,
            card,
            blocked=True,
            reason=body.reason,
            api_key_id=principal.api_key_id,
            now=clock(),
            programs=principal.program_scope,
        )


@router.post(
    "/cards/by-redemption/{card}/unblock",
    response_model=CardDetailsOut,
    responses=responses(errors.CardNotFound, errors.CardNotBlocked),
    summary="Unblock a blocked card (support; audited with the reason)",
)
def unblock_card(
    card: CardRef, body: ReasonIn, principal: Principal = Depends(require("support"))
) -> CardDetailsOut:
    with transaction() as session:
        return service.set_blocked(
            session,
            card,
            blocked=False,
            reason=body.reason,
            api_key_id=principal.api_key_id,
            now=clock(),
            programs=principal.program_scope,
        )


@router.post(
    "/cards/by-redemption/{card}/unlock",
    response_model=CardDetailsOut,
    responses=responses(errors.CardNotFound),
    summary="Lift a card's PIN lock and every client's delay on it (support; audited with the reason)",
)
def unlock_card(
    card: CardRef, body: ReasonIn, principal: Principal = Depends(require("support"))
) -> CardDetailsOut:
    with transaction() as session:
        return service.unlock(
            session,
            card,
            reason=body.reason,
            api_key_id=principal.api_key_id,
            now=clock(),
            programs=principal.program_scope,
        )
