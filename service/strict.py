"""Unknown query parameters are refused (422), not ignored: a misspelt filter such as `?progam=`
would otherwise silently return everything."""

from __future__ import annotations

from fastapi import Request

from service.errors import ValidationFailed


def _query_names(dependant: object) -> set[str]:
    names = {p.alias for p in dependant.query_params}  # type: ignore[attr-defined]
    for sub in dependant.dependencies:  # type: ignore[attr-defined]
        names |= _query_names(sub)
    return names


_ALLOWED: dict[int, frozenset[str]] = {}


def _allowed(route: object) -> frozenset[str]:
    names = _ALLOWED.get(id(route))
    if names is None:  # routes live as long as the app: computed once per route
        names = _ALLOWED[id(route)] = frozenset(_query_names(route.dependant))  # type: ignore[attr-defined]
    return names


async def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    unknown = sorted(set(request.query_params.keys()) - _allowed(route))
    if unknown:
        raise ValidationFailed(
            f"unknown query parameter(s): {', '.join(unknown)}",
            errors=[
                {"field": f"query.{name}", "message": "unknown parameter", "type": "extra_forbidden"}
                for name in unknown
            ],
        )
