from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.delivery.errors import ReceiptNotYetKnown, ReceiptSecretInvalid
from service.delivery.service import ReceiptTooEarly, apply_receipt
from service.kit.config import get_settings
from service.kit.http.errors import responses
from service.kit.http.strict import reject_unknown_query

router = APIRouter(prefix="/v1/sms", tags=["sms"], dependencies=[Depends(reject_unknown_query)])
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
