"""FastAPI dependencies: who is calling, and may they call this route."""
from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth.service import Principal, authenticate
from service.db import new_session
from service.errors import forbidden

_bearer = HTTPBearer(auto_error=False, description="API key created with `rewards keys create`")


def current_principal(request: Request,
                      credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else request.headers.get("authorization")
    with new_session() as session:
        principal = authenticate(session, header)
    request.state.principal = principal
    return principal


def require(*roles: str) -> Callable[..., Principal]:
    """Admin may call everything; other roles only the routes that name them."""
    allowed = frozenset(roles) | {"admin"}

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        if principal.role not in allowed:
            raise forbidden(f"the {principal.role} role may not call this route")
        return principal

    return dependency
