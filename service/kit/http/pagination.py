"""Cursor pagination by keyset. A list's `cursor` is the sort key of the last item of the page before
(a program's code, a product's sku, a redemption's id, ...), in the form its query parameter's
schema states (a pattern per list). Any value of that form is a position in the list's order, so a
cursor that is valid by the schema is never refused: the page starts after it, and may be empty.
Every page but the last has `next_cursor`; the last has `next_cursor: null` (a list reads one item
more than it shows to know)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, BeforeValidator

T = TypeVar("T")


def _decimal_digits(value: object) -> object:
    # The query's text as it came: pydantic's int parsing would take " 15" or "\f15" for 15, which
    # the published `integer` does not allow (schemathesis's negative phase sends such values).
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("a whole number of decimal digits")
    return value


Limit = Annotated[int, Query(ge=1, le=200, description="Page size"), BeforeValidator(_decimal_digits)]

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def cursor_query(pattern: str, position: str, max_length: int = 64) -> Any:
    """The `cursor` query parameter of a list whose positions have this form (`pattern`, anchored);
    `position` says in words what the position is."""
    return Query(
        min_length=1,
        max_length=max_length,
        pattern=pattern,
        description=f"Where the page starts: after {position}. Pass `next_cursor` of the previous page;"
        " any value of this form is a valid position (the page after it may be empty).",
    )


UuidCursor = Annotated[
    str | None, cursor_query(UUID_PATTERN, "this id (in the list's order), e.g. the last id of a page", 36)
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def page(items: list, limit: int, key: str) -> dict:
    """A page of the first `limit` of `items`, read with `limit + 1`: when there are more, the page
    names its last item's `key` as the cursor of the next; otherwise it is the last page (null)."""
    shown = items[:limit]
    more = len(items) > limit
    return {"items": shown, "next_cursor": str(getattr(shown[-1], key)) if more else None}


def uuid_position(cursor: str | None) -> uuid.UUID | None:
    return None if cursor is None else uuid.UUID(cursor)
