"""Pieces of SQL that one domain hands to another's statement, so that a business event and what it
implies (its record, its outbox row) are written by one statement in one round trip."""

from __future__ import annotations

from typing import Any, NamedTuple


class Fragment(NamedTuple):
    """SQL with psycopg `%(name)s` placeholders, and the values of those placeholders."""

    sql: str
    params: dict[str, Any]
