"""How the API keys' roles appear in the OpenAPI document: one bearer scheme per role, and the
security requirement of an operation that some roles may call."""

from __future__ import annotations

from typing import Any

from service.auth.models import ROLES

# FastAPI's one scheme for every bearer dependency, which the document replaces by a scheme per role.
BEARER = "HTTPBearer"


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
