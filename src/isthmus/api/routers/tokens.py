"""``/api/tokens``: API tokens for machines (MES, ERP, scripts).

A token has a role, scopes and an expiry; its text ``ist_<id>_<secret>`` is answered
once, by the creation, and stored only hashed.  Reads need ``tokens:read``, creation and
revocation ``tokens:write``.  A token's use is audited under ``token:<id>``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field

from isthmus.api.deps import Ctx, guarded, require
from isthmus.api.routers.identity_problems import Name, Scopes, identity_problem, iso
from isthmus.security.apitokens import ApiToken
from isthmus.security.errors import IdentityError
from isthmus.security.rbac import Action, Principal, Resource, Role

router = APIRouter(prefix="/api/tokens", tags=["tokens"])

Reader = Annotated[Principal, Depends(require(Resource.TOKENS, Action.READ))]
Writer = Annotated[Principal, Depends(require(Resource.TOKENS, Action.WRITE))]
MAX_LIFETIME_S = 5 * 365 * 86400.0


class TokenOut(BaseModel):
    id: str
    name: str
    role: Role
    scopes: list[str]
    created_at: str
    created_by: str
    expires_at: str
    revoked_at: str | None
    revoked_by: str | None
    last_used_at: str | None = Field(description="to the minute")
    state: str = Field(description="active, expired or revoked")


class TokenCreate(BaseModel):
    name: Name = Field(description="what the audit log shows, e.g. mes-lyon")
    role: Role = Role.VIEWER
    scopes: Scopes = Field(default_factory=list)
    expires_in: float = Field(
        default=90 * 86400.0,
        gt=0,
        le=MAX_LIFETIME_S,
        description="lifetime in seconds (default 90 days, at most 5 years)",
    )


class TokenCreated(TokenOut):
    token: str = Field(description="ist_<id>_<secret>: shown only now, stored only hashed")


def _out(token: ApiToken, now_ns: int) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "scopes": list(token.scopes),
        "created_at": iso(token.created_ns),
        "created_by": token.created_by,
        "expires_at": iso(token.expires_ns),
        "revoked_at": iso(token.revoked_ns),
        "revoked_by": token.revoked_by,
        "last_used_at": iso(token.last_used_ns),
        "state": token.state(now_ns),
    }


@router.get("", summary="Every API token (never a secret)", responses=guarded(
    Resource.TOKENS, Action.READ, 503
))  # fmt: skip
async def list_tokens(principal: Reader, ctx: Ctx) -> list[TokenOut]:
    tokens = await asyncio.to_thread(ctx.identity.list_tokens, principal)
    now = ctx.clock.now_ns()
    return [TokenOut(**_out(t, now)) for t in tokens]


@router.post(
    "",
    status_code=201,
    summary="Create an API token: its text is in this answer only",
    responses=guarded(
        Resource.TOKENS, Action.WRITE, (422, "invalid name, role, scopes or lifetime"), 503
    ),
)
async def create_token(body: TokenCreate, principal: Writer, ctx: Ctx) -> TokenCreated:
    try:
        token, text = await asyncio.to_thread(
            lambda: ctx.identity.create_token(
                body.name,
                body.role,
                body.scopes,
                expires_in_s=float(body.expires_in),
                actor=principal.actor,
                caller=principal,
            )
        )
    except IdentityError as exc:
        raise identity_problem(exc) from None
    return TokenCreated(**_out(token, ctx.clock.now_ns()), token=text)


@router.delete(
    "/{token_id}",
    status_code=204,
    summary="Revoke an API token (it stops working at once)",
    responses=guarded(Resource.TOKENS, Action.WRITE, (404, "no such token"), 503),
)
async def revoke_token(
    token_id: Annotated[str, Path(min_length=1, max_length=64)], principal: Writer, ctx: Ctx
) -> Response:
    try:
        await asyncio.to_thread(
            lambda: ctx.identity.revoke_token(
                token_id, actor=principal.actor, caller=principal, by_name=False
            )
        )
    except IdentityError as exc:
        raise identity_problem(exc) from None
    return Response(status_code=204)
