"""FastAPI dependencies: who is calling, and may they call this route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from service.auth.service import Principal, authenticate, principal_cache
from service.db import new_session
from service.errors import forbidden

_bearer = HTTPBearer(auto_error=False, description="API key created with `rewards keys create`")


def _lookup(header: str | None) -> Principal:
    with new_session() as session:
        return authenticate(session, header)


async def current_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    header = (
        f"{credentials.scheme} {credentials.credentials}"
        if credentials
        else request.headers.get("authorization")
    )
    principal = principal_cache.get(header) if header else None
    if principal is None:
        principal = await run_in_threadpool(_lookup, header)  # raises 401 problems; failures are not cached
        if header:
            principal_cache.put(header, principal)
    request.state.principal = principal
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Admin may call everything; other roles only the routes that name them."""
    allowed = frozenset(roles) | {"admin"}

    async def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        if principal.role not in allowed:
            raise forbidden(f"the {principal.role} role may not call this route")
        return principal

    return dependency
