from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from service.auth.deps import require
from service.auth.service import Principal
from service.catalog import queries
from service.catalog.schemas import OfferOut, ProductOut, ProgramOut
from service.db import new_session
from service.errors import not_found, responses
from service.pagination import Cursor, Limit, Page, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["catalog"], responses=responses())

ProgramCode = Annotated[str, Path(max_length=64, description="Program code")]


def _page(items: list, limit: int, key: str) -> dict:
    return {"items": items, "next_cursor": encode_cursor(getattr(items[-1], key)) if len(items) == limit else None}


@router.get("/programs", response_model=Page[ProgramOut], summary="Programs this key may see, with tariffs")
def get_programs(principal: Principal = Depends(require("loyalty", "finance", "support")),
                 limit: Limit = 50, cursor: Cursor = None) -> dict:
    visible = None if principal.sees_all_programs() else principal.programs
    with new_session() as session:
        items = queries.list_programs(session, visible=visible, after=decode_cursor(cursor), limit=limit)
    return _page(items, limit, "code")


@router.get("/programs/{program}/offers", response_model=Page[OfferOut], summary="Offers of a program")
def get_offers(program: ProgramCode,
               principal: Principal = Depends(require("loyalty", "finance", "support")),
               tariff: Annotated[str | None, Query(max_length=64, description="Only offers this tariff may redeem, priced for it")] = None,
               limit: Limit = 50, cursor: Cursor = None) -> dict:
    if not principal.may_see_program(program):
        raise not_found(f"program {program}")
    with new_session() as session:
        items = queries.list_offers(session, program, tariff=tariff, after=decode_cursor(cursor), limit=limit)
    return _page(items, limit, "code")


@router.get("/products", response_model=Page[ProductOut], summary="Products (a partner key sees its own)")
def get_products(principal: Principal = Depends(require("partner", "finance", "support")),
                 limit: Limit = 50, cursor: Cursor = None) -> dict:
    with new_session() as session:
        items = queries.list_products(session, partner=principal.partner if principal.role == "partner" else None,
                                      after=decode_cursor(cursor), limit=limit)
    return _page(items, limit, "sku")
