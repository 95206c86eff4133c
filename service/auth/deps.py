"""FastAPI dependencies: who is calling, and may they call this route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from service.auth.service import Principal, authenticate, principal_cache
from service.kit.db.engine import new_session
from service.kit.http.errors import forbidden

_bearer = HTTPBearer(auto_error=False, description="API key created with `rewards keys create`")


def _lookup(header: str | None) -> Principal:
    with new_session() as session:
        return authenticate(session, header)


async def principal_of(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <key>`: from the cache, else looked up (401 problems
    for a missing or invalid key; failures are not cached)."""
    header = request.headers.get("authorization")
    principal = principal_cache.get(header) if header else None
    if principal is None:
        generation = principal_cache.generation  # before the lookup: a revocation meanwhile wins
        principal = await run_in_threadpool(_lookup, header)
        if header:
            principal_cache.put(header, principal, generation)
    request.state.principal = principal
    return principal


async def current_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    return await principal_of(request)


def check_role(principal: Principal, allowed: frozenset[str]) -> Principal:
    if principal.role not in allowed and principal.role != "admin":
        raise forbidden(f"the {principal.role} role may not call this route")
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Admin may call everything; other roles only the routes that name them."""
    allowed = frozenset(roles)

    async def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        return check_role(principal, allowed)

    dependency.roles = allowed  # type: ignore[attr-defined]  # the document's security (service/openapi_contract.py)
    return dependency
