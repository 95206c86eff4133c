"""Cursor pagination by keyset. `next_cursor` is opaque to clients: the sort key of the page's last
item, marked with the list it belongs to and base64url-encoded, so that the encoding may change
without breaking anybody and a cursor of one list is never taken for another's. A string of the
published form that is no cursor of this list is 422 `invalid_cursor`; one of another form breaks
the schema (422 `validation_error`)."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, BeforeValidator

from service.kit.http.errors import InvalidCursor

T = TypeVar("T")


def _decimal_digits(value: object) -> object:
    # The query's text as it came: pydantic's int parsing would take " 15" or "\f15" for 15, which
    # the published `integer` does not allow (schemathesis's negative phase sends such values).
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("a whole number of decimal digits")
    return value


Limit = Annotated[int, Query(ge=1, le=200, description="Page size"), BeforeValidator(_decimal_digits)]

CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=256,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page, exactly as it was given (an opaque string:"
        " do not build or change one). A string of this form that is no cursor of this list is refused"
        " with 422 `invalid_cursor`.",
    ),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(kind: str, position: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, kind: str, parse: Callable[[str], T]) -> T | None:
    """The position a cursor of the list `kind` names (`parse` turns its text into the sort key and
    raises ValueError for anything else), or None without a cursor; InvalidCursor otherwise."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, _, position = text.partition(":")
        if found != kind:
            raise ValueError(kind)
        return parse(position)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(
            "this is not a cursor of this list: pass `next_cursor` of the previous page as it was given",
            errors=[{"field": "query.cursor", "message": "not a cursor of this list"}],
        ) from None


def matching(pattern: str) -> Callable[[str], str]:
    """A cursor position parser that accepts text of this pattern only."""

    def parse(position: str) -> str:
        if not re.fullmatch(pattern, position):
            raise ValueError(position)
        return position

    return parse


def uuid_position(position: str) -> uuid.UUID:
    return uuid.UUID(hex=position)


def page(items: list, limit: int, key: str, kind: str) -> dict:
    """A page of `items` (at most `limit`): a full page names its last item's `key` as the cursor of
    the next; a short page is the last."""
    full = len(items) == limit
    return {
        "items": items,
        "next_cursor": encode_cursor(kind, str(getattr(items[-1], key))) if full else None,
    }
