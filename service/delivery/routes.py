from __future__ import annotations

import hmac
import re
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from catalog.model import SLUG
from service.auth.deps import require
from service.auth.service import Principal
from service.delivery.errors import ReceiptNotYetKnown, ReceiptSecretInvalid, WebhookNotConfigured
from service.delivery.service import ReceiptTooEarly, apply_receipt
from service.events import event_log
from service.events.event_log import EventStatus, WebhookEventOut
from service.events.schemas import EVENT_TYPES
from service.kit.config import get_settings
from service.kit.db.engine import driver, new_session, transaction
from service.kit.http.errors import InvalidCursor, responses
from service.kit.http.pagination import Cursor, Limit, Page
from service.kit.http.strict import reject_unknown_query
from service.ledger.periods import MONTH, parse_month

router = APIRouter(prefix="/v1/sms", tags=["sms"], dependencies=[Depends(reject_unknown_query)])
events_router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(reject_unknown_query)]
)
EVENT_TYPE = "^(" + "|".join(re.escape(t) for t in EVENT_TYPES) + ")$"
_secret = APIKeyHeader(
    name="X-Receipt-Secret",
    auto_error=False,
    description="The shared secret configured as SMS_RECEIPT_SECRET",
)
STATES = {"delivered": "DELIVRD", "failed": "UNDELIV", "expired": "EXPIRED", "rejected": "REJECTD"}


class ReceiptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    status: Literal["delivered", "failed", "expired", "rejected"]


class ReceiptOut(BaseModel):
    known: bool = Field(description="True: the receipt was applied")


@router.post(
    "/receipts/{provider}",
    response_model=ReceiptOut,
    summary="Delivery receipt from the HTTP gateway",
    responses=responses(ReceiptSecretInvalid, ReceiptNotYetKnown),
)
async def receive_receipt(
    body: ReceiptIn,
    provider: Annotated[Literal["http"], Path()],
    secret: Annotated[str | None, Security(_secret)] = None,
) -> ReceiptOut:
    expected = get_settings().sms_receipt_secret
    if (
        expected is None
        or secret is None
        or not hmac.compare_digest(secret.encode(), expected.get_secret_value().encode())
    ):
        raise ReceiptSecretInvalid("send the gateway's shared secret in X-Receipt-Secret")
    try:
        known = await run_in_threadpool(apply_receipt, provider, body.message_id, STATES[body.status])
    except ReceiptTooEarly:
        raise ReceiptNotYetKnown(
            "no such message yet; send the receipt again later",
            headers={"Retry-After": "2"},
        ) from None
    return ReceiptOut(known=known)


def _programs(principal: Principal) -> frozenset[str] | None:
    return principal.programs if principal.role == "loyalty" else None


@events_router.get(
    "/events",
    response_model=Page[WebhookEventOut],
    summary="Webhook events sent to the programs' endpoints (newest first), with their delivery status",
    responses=responses(InvalidCursor),
)
def list_webhook_events(
    principal: Principal = Depends(require("loyalty", "support")),
    status: Annotated[EventStatus | None, Query(description="pending, delivered or given_up")] = None,
    program: Annotated[str | None, Query(pattern=SLUG)] = None,
    type: Annotated[str | None, Query(pattern=EVENT_TYPE, description="Event type, e.g. stock.low")] = None,
    period: Annotated[
        str | None, Query(pattern=MONTH.pattern, description="YYYY-MM: created that month (program's zone)")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict:
    month = parse_month(period, "query.period") if period is not None else None
    with new_session() as session:
        found = event_log.list_events(
            driver(session),
            programs=_programs(principal),
            limit=limit,
            status=status,
            program=program,
            type_=type,
            month=month,
            cursor=cursor,
        )
    return {"items": found.items, "next_cursor": found.next_cursor}


@events_router.post(
    "/events/{event_id}/replay",
    status_code=202,
    response_model=WebhookEventOut,
    summary="Send an event again (same id, a new 24-hour retry window), whatever its status",
    responses=responses(WebhookNotConfigured),
)
def replay_webhook_event(
    event_id: Annotated[UUID, Path(description="Event id")],
    principal: Principal = Depends(require("loyalty", "support")),
) -> WebhookEventOut:
    with transaction() as session:
        return event_log.replay(session, event_id, programs=_programs(principal))
