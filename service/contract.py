"""What the generated OpenAPI document states beyond what FastAPI derives: one bearer security scheme
per role with each operation's allowed roles, and the links between operations (a redemption to
its reading, cancelling and resending; a card verification to its exchange)."""

from __future__ import annotations

from typing import Any

from fastapi.routing import iter_route_contexts

ROLES = ("loyalty", "partner", "finance", "support", "admin")
_BEARER = "HTTPBearer"


def scheme(role: str) -> str:
    return f"{role}Key"


def security_schemes() -> dict[str, dict[str, Any]]:
    return {
        scheme(role): {
            "type": "http",
            "scheme": "bearer",
            "description": f"An API key of the `{role}` role (`rewards keys create --role {role}`)"
            + (": may call every operation" if role == "admin" else ""),
        }
        for role in ROLES
    }


def security(*roles: str, admin: bool = True) -> list[dict[str, list[str]]]:
    """The security requirement of an operation the roles may call (and admin, unless told not)."""
    allowed = {*roles, "admin"} if admin else set(roles)
    return [{scheme(role): []} for role in ROLES if role in allowed]


def _roles_of(dependant: Any) -> frozenset[str] | None:
    roles = getattr(dependant.call, "roles", None)
    if roles is not None:
        return frozenset(roles)
    for sub in dependant.dependencies:
        found = _roles_of(sub)
        if found is not None:
            return found
    return None


def _operation_ids(paths: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (method.upper(), path): operation["operationId"]
        for path, item in paths.items()
        for method, operation in item.items()
        if "operationId" in operation
    }


def _redemption_links(ids: dict[tuple[str, str], str]) -> dict[str, Any]:
    by_id = {"redemption_id": "$response.body#/id"}
    return {
        "GetRedemption": {
            "operationId": ids[("GET", "/v1/redemptions/{redemption_id}")],
            "parameters": by_id,
            "description": "This redemption as it is now",
        },
        "CancelRedemption": {
            "operationId": ids[("POST", "/v1/redemptions/{redemption_id}/cancel")],
            "parameters": by_id,
            "description": "Cancel it while nobody could have used the reward",
        },
        "ResendRedemption": {
            "operationId": ids[("POST", "/v1/redemptions/{redemption_id}/resend")],
            "parameters": by_id,
            "description": "Send its SMS again",
        },
    }


def finish(document: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """Role security and links, in place; returns the document."""
    components = document.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes.pop(_BEARER, None)
    schemes.update(security_schemes())
    paths = document.get("paths", {})
    for route in iter_route_contexts(routes):
        path, dependant = getattr(route, "path_format", None), getattr(route, "dependant", None)
        if path not in paths or dependant is None:
            continue
        roles = _roles_of(dependant)
        for method in getattr(route, "methods", None) or ():
            operation = paths[path].get(method.lower())
            if operation is None or {_BEARER: []} not in operation.get("security", []):
                continue
            explicit = [entry for entry in operation["security"] if entry != {_BEARER: []}]
            if explicit:  # the route states its security itself (openapi_extra): that stands
                operation["security"] = explicit
                continue
            if roles is None:
                raise RuntimeError(f"{method} {path} authenticates but names no roles (use require())")
            operation["security"] = security(*roles)
    ids = _operation_ids(paths)
    links = _redemption_links(ids)
    paths["/v1/redemptions"]["post"]["responses"]["201"]["links"] = links
    paths["/v1/redemptions/{redemption_id}"]["get"]["responses"]["200"]["links"] = links
    paths["/v1/cards/verify"]["post"]["responses"]["200"]["links"] = {
        "ExchangeCard": {
            "operationId": ids[("POST", "/v1/cards/exchanges")],
            "requestBody": {
                "number": "$request.body#/number",
                "pin": "$request.body#/pin",
                "sku": "$response.body#/products/0/sku",
            },
            "description": "Exchange the verified card for the first of the products it may buy",
        }
    }
    return document
