from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from catalog.model import SKU, SLUG
from service.auth.deps import require
from service.auth.service import Principal
from service.catalog import queries
from service.catalog.errors import UnknownTariff
from service.catalog.schemas import OfferOut, ProductOut, ProgramDetailOut, ProgramOut
from service.kit.db.engine import new_session
from service.kit.http.errors import not_found, responses
from service.kit.http.pagination import Limit, Page, cursor_query, page
from service.kit.http.strict import reject_unknown_query

# A paging cursor's position: the code or sku of the last item of the page before.
ProgramCursor = Annotated[str | None, cursor_query(SLUG, "this program code (programs sort by code)")]
OfferCursor = Annotated[str | None, cursor_query(SLUG, "this offer code (offers sort by code)")]
SkuCursor = Annotated[str | None, cursor_query(SKU, "this sku (products sort by sku)")]

router = APIRouter(
    prefix="/v1", tags=["catalog"], responses=responses(), dependencies=[Depends(reject_unknown_query)]
)

ProgramCode = Annotated[str, Path(pattern=SLUG, description="Program code")]


@router.get(
    "/programs",
    response_model=Page[ProgramOut],
    summary="Programs this key may see, with tariffs",
)
def get_programs(
    principal: Principal = Depends(require("loyalty", "finance", "support")),
    limit: Limit = 50,
    cursor: ProgramCursor = None,
) -> dict:
    visible = None if principal.sees_all_programs() else principal.programs
    with new_session() as session:
        items = queries.list_programs(session, visible=visible, after=cursor, limit=limit + 1)
    return page(items, limit, "code")


@router.get(
    "/programs/{program}",
    response_model=ProgramDetailOut,
    summary="A program, with its budget spent and remaining this month",
)
def get_program(
    program: ProgramCode,
    principal: Principal = Depends(require("loyalty", "finance", "support")),
) -> ProgramDetailOut:
    if not principal.may_see_program(program):
        raise not_found(f"program {program}")
    with new_session() as session:
        return queries.program_detail(session, program, sandbox=principal.sandbox)


@router.get(
    "/programs/{program}/offers",
    response_model=Page[OfferOut],
    summary="Offers of a program",
    responses=responses(UnknownTariff),
)
def get_offers(
    program: ProgramCode,
    principal: Principal = Depends(require("loyalty", "finance", "support")),
    tariff: Annotated[
        str | None, Query(pattern=SLUG, description="Only offers this tariff may redeem, priced for it")
    ] = None,
    limit: Limit = 50,
    cursor: OfferCursor = None,
) -> dict:
    if not principal.may_see_program(program):
        raise not_found(f"program {program}")
    with new_session() as session:
        items = queries.list_offers(session, program, tariff=tariff, after=cursor, limit=limit + 1)
    return page(items, limit, "code")


@router.get(
    "/products",
    response_model=Page[ProductOut],
    summary="Products (a partner key sees its own)",
)
def get_products(
    principal: Principal = Depends(require("partner", "finance", "support")),
    limit: Limit = 50,
    cursor: SkuCursor = None,
) -> dict:
    with new_session() as session:
        items = queries.list_products(
            session,
            partner=principal.partner if principal.role == "partner" else None,
            after=cursor,
            limit=limit + 1,
        )
    return page(items, limit, "sku")
