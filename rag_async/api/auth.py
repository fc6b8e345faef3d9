"""The API's side of identity (rag_async/identity.py): the caller of a request, by its key,
as route dependencies. With no key configured, every caller is the one local user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rag_async.api.state import State
from rag_async.domain.errors import Forbidden, Unauthorized
from rag_async.domain.identity import LOCAL, Principal

# Declared as a dependency so the OpenAPI document (and /docs's "Authorize") know the scheme.
_bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer <key>")


async def optional_caller(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller by its key; None when it sent none (a route may then accept a token).
    Each request of a key takes one of its tokens (429 `rate_limited` when there are none:
    quotas.py); one with a wrong key or none is refused before it costs anyone a token."""
    if not state.keyring.enabled:
        return LOCAL
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthorized("the Authorization header must be 'Bearer <API key>'")
        return None
    principal = state.keyring.identify(credentials.credentials)
    if principal is None:
        raise Unauthorized("this API key is not valid")
    await state.rate.admit(principal)
    return principal


async def caller(principal: Annotated[Principal | None, Depends(optional_caller)]) -> Principal:
    if principal is None:
        raise Unauthorized("an API key is needed: send 'Authorization: Bearer <API key>'")
    return principal


async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    if not principal.admin:
        raise Forbidden("only an admin key may do this")
    return principal


Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]
