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
from service.kit.http.errors import InvalidCursor, not_found, responses
from service.kit.http.pagination import Cursor, Limit, Page, decode_cursor, matching, page
from service.kit.http.strict import reject_unknown_query

# A paging cursor's position: the slug or sku of the last item of the page before.
slug_position = matching(SLUG)
sku_position = matching(SKU)

router = APIRouter(
    prefix="/v1", tags=["catalog"], responses=responses(), dependencies=[Depends(reject_unknown_query)]
)

ProgramCode = Annotated[str, Path(pattern=SLUG, description="Program code")]


@router.get(
    "/programs",
    response_model=Page[ProgramOut],
    summary="Programs this key may see, with tariffs",
    responses=responses(InvalidCursor),
)
def get_programs(
    principal: Principal = Depends(require("loyalty", "finance", "support")),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict:
    visible = None if principal.sees_all_programs() else principal.programs
    after = decode_cursor(cursor, "programs", slug_position)
    with new_session() as session:
        items = queries.list_programs(session, visible=visible, after=after, limit=limit)
    return page(items, limit, "code", "programs")


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
    responses=responses(UnknownTariff, InvalidCursor),
)
def get_offers(
    program: ProgramCode,
    principal: Principal = Depends(require("loyalty", "finance", "support")),
    tariff: Annotated[
        str | None, Query(pattern=SLUG, description="Only offers this tariff may redeem, priced for it")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict:
    if not principal.may_see_program(program):
        raise not_found(f"program {program}")
    after = decode_cursor(cursor, "offers", slug_position)
    with new_session() as session:
        items = queries.list_offers(session, program, tariff=tariff, after=after, limit=limit)
    return page(items, limit, "code", "offers")


@router.get(
    "/products",
    response_model=Page[ProductOut],
    summary="Products (a partner key sees its own)",
    responses=responses(InvalidCursor),
)
def get_products(
    principal: Principal = Depends(require("partner", "finance", "support")),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict:
    after = decode_cursor(cursor, "products", sku_position)
    with new_session() as session:
        items = queries.list_products(
            session,
            partner=principal.partner if principal.role == "partner" else None,
            after=after,
            limit=limit,
        )
    return page(items, limit, "sku", "products")
