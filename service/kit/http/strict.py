"""Unknown and repeated single-valued query parameters are refused (422), not ignored: a misspelt
filter such as `?progam=` would otherwise silently return everything."""

from __future__ import annotations

import re
import types
from datetime import date
from typing import Union, get_args, get_origin

from fastapi import Request

from service.kit.http.errors import ValidationFailed


def _repeatable(annotation: object) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):  # Optional[list[...]]
        return any(_repeatable(arg) for arg in get_args(annotation))
    return origin in (list, set, frozenset, tuple)


def _query_names(dependant: object) -> dict[str, bool]:
    """Each query parameter's name and whether it may repeat (a list-typed filter)."""
    names = {
        p.alias: _repeatable(p.field_info.annotation)
        for p in dependant.query_params  # type: ignore[attr-defined]
    }
    for sub in dependant.dependencies:  # type: ignore[attr-defined]
        names |= _query_names(sub)
    return names


_ALLOWED: dict[int, dict[str, bool]] = {}


def _allowed(route: object) -> dict[str, bool]:
    names = _ALLOWED.get(id(route))
    if names is None:  # routes live as long as the app: computed once per route
        names = _ALLOWED[id(route)] = _query_names(route.dependant)  # type: ignore[attr-defined]
    return names


async def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    allowed = _allowed(route)
    _refuse(
        "unknown query parameter(s)",
        "unknown parameter",
        "extra_forbidden",
        sorted(set(request.query_params.keys()) - allowed.keys()),
    )
    # `?program=a&program=b` on a single-valued filter would silently use one of them (the last).
    _refuse(
        "query parameter(s) given more than once",
        "given more than once",
        "repeated_parameter",
        sorted(
            n
            for n, repeatable in allowed.items()
            if not repeatable and len(request.query_params.getlist(n)) > 1
        ),
    )


def _refuse(summary: str, message: str, kind: str, names: list[str]) -> None:
    if names:
        raise ValidationFailed(
            f"{summary}: {', '.join(names)}",
            errors=[{"field": f"query.{name}", "message": message, "type": kind} for name in names],
        )


# A period: a calendar month, YYYY-MM, of the years 2000-2999.
MONTH = re.compile(r"^(2\d{3})-(0[1-9]|1[0-2])$")


def parse_month(value: str, field: str = "path.month") -> date:
    match = MONTH.match(value or "")
    if not match or not 2000 <= int(match.group(1)) <= 2999:
        raise ValidationFailed(
            "a month is written YYYY-MM, e.g. 2026-03",
            errors=[{"field": field, "message": "expected YYYY-MM", "type": "pattern"}],
        )
    return date(int(match.group(1)), int(match.group(2)), 1)
