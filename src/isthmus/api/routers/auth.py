"""``/api/auth``: log in for a bearer token; who am I."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from isthmus.api.deps import Ctx, CurrentUser
from isthmus.api.problems import ApiProblem, Problem
from isthmus.api.schemas import LoginRequest, Me, TokenResponse
from isthmus.model.durations import format_ns

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/login",
    summary="Exchange a username and password for a bearer token",
    responses={401: {"model": Problem, "description": "wrong credentials"}},
)
async def login(body: LoginRequest, request: Request, ctx: Ctx) -> TokenResponse:
    delay = ctx.identity.login_delay(body.username)
    if delay > 0:
        await asyncio.sleep(delay)
    client = request.client.host if request.client else "?"
    issued = await asyncio.to_thread(ctx.identity.login, body.username, body.password, client)
    if issued is None:
        raise ApiProblem(
            401,
            "wrong username or password",
            headers={"WWW-Authenticate": 'Bearer realm="isthmus"'},
        )
    return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)


@router.get("/me", summary="The caller's username, role and token expiry")
async def me(user: CurrentUser) -> Me:
    return Me(
        username=user.username,
        role=str(user.role),
        expires_at=format_ns(user.expires_at * 1_000_000_000),
    )
