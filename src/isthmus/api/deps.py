"""Dependencies shared by the routers: the context and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from isthmus.api.context import ApiContext
from isthmus.api.problems import ApiProblem
from isthmus.security.identity import Claims, InvalidToken

_bearer = HTTPBearer(auto_error=False, description="a token from POST /api/auth/login")


def get_ctx(conn: HTTPConnection) -> ApiContext:
    ctx: ApiContext = conn.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]


def require_user(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiProblem(
            401,
            "a bearer token is required (POST /api/auth/login)",
            headers={"WWW-Authenticate": 'Bearer realm="isthmus"'},
        )
    try:
        return ctx.identity.verify_token(credentials.credentials)
    except InvalidToken as exc:
        raise ApiProblem(
            401,
            str(exc),
            headers={"WWW-Authenticate": 'Bearer realm="isthmus", error="invalid_token"'},
        ) from None


CurrentUser = Annotated[Claims, Depends(require_user)]
