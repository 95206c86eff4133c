"""GET /v1/settlements/{partner}?period=YYYY-MM: finance and admin for any partner, a partner key
for its own (another partner's settlement is a 404, like anything outside a key's scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from catalog.model import SLUG
from service.auth.deps import require
from service.auth.service import Principal
from service.kit.db.engine import new_session
from service.kit.http.errors import NotFound, responses
from service.kit.http.strict import reject_unknown_query
from service.settlements import service
from service.settlements.schemas import SettlementOut

router = APIRouter(prefix="/v1", tags=["settlements"], dependencies=[Depends(reject_unknown_query)])

PERIOD = r"^20\d{2}-(0[1-9]|1[0-2])$"


@router.get(
    "/settlements/{partner}",
    response_model=SettlementOut,
    responses=responses(),
    summary="What we owe a partner for a month: codes issued and certificates exchanged, per product",
)
def read_settlement(
    partner: Annotated[str, Path(pattern=SLUG, description="Partner code")],
    period: Annotated[str, Query(pattern=PERIOD, description="Month, YYYY-MM (program time zone)")],
    principal: Principal = Depends(require("finance", "partner")),
) -> SettlementOut:
    if principal.role == "partner" and principal.partner != partner:
        raise NotFound(f"partner {partner} not found")
    with new_session() as session:
        return service.settlement(session, partner, period)
