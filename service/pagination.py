"""Cursor pagination by keyset: `next_cursor` is the sort key of the last item of the page, and any
value of the documented form is a valid cursor ("items after this one")."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def page(items: list, limit: int, key: str) -> dict:
    """A page of `items` (at most `limit`): a full page names its last item's `key` as the cursor of
    the next; a short page is the last."""
    return {"items": items, "next_cursor": str(getattr(items[-1], key)) if len(items) == limit else None}
