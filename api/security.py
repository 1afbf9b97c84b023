"""Who is asking: the role of the request's API key, or 401."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from breakout.auth import Role, role_of

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or `X-API-Key: <key>`")


async def caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Role:
    """The role granted by the request's key; a missing or unknown key is 401.

    ``async`` though it never awaits: FastAPI runs a plain ``def`` dependency in a thread
    of its pool, a hop (and a GIL hand-over) per request that shows under load.
    """
    key = bearer.credentials if bearer is not None else header
    if not key:
        raise HTTPException(
            401,
            "an API key is required: send `Authorization: Bearer <key>` (create one with `breakout api-key`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    role = role_of(key, request.app.state.roles)
    if role is None:
        raise HTTPException(
            401, "this API key is not known to this server", headers={"WWW-Authenticate": "Bearer"}
        )
    return role


Caller = Annotated[Role, Depends(caller)]
