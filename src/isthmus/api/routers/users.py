"""``/api/users``: list, add, change, disable, delete users; reset a password or a
second factor.  Reads need ``users:read``, changes ``users:write`` (admin and
security_admin).  Only an admin grants the admin role or changes an admin; a scoped
caller grants only scopes inside their own.  Every change is audited before it is made.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field

from isthmus.api.context import ApiContext
from isthmus.api.deps import Ctx, guarded, require
from isthmus.api.routers.identity_problems import Flag, Name, Scopes, identity_problem, iso
from isthmus.security.errors import IdentityError
from isthmus.security.identity import UserInfo
from isthmus.security.rbac import Action, Principal, Resource, Role

router = APIRouter(prefix="/api/users", tags=["users"])

Reader = Annotated[Principal, Depends(require(Resource.USERS, Action.READ))]
Writer = Annotated[Principal, Depends(require(Resource.USERS, Action.WRITE))]
Username = Annotated[str, Path(min_length=1, max_length=64, description="the username")]


class UserOut(BaseModel):
    username: str
    role: Role
    scopes: list[str] = Field(description="hierarchy prefixes; empty: the whole enterprise")
    disabled: bool
    mfa_active: bool
    mfa_pending: bool = Field(description="enrolled but not verified yet")
    recovery_codes_left: int
    locked_until: str | None = Field(description="ISO 8601 UTC while locked out, else null")
    sessions: int = Field(description="active login sessions")
    created_at: str | None
    changed_at: str | None


class UserCreate(BaseModel):
    username: Name
    password: str = Field(
        min_length=1, max_length=1024, description="12+ characters, not the username, not common"
    )
    role: Role = Role.VIEWER
    scopes: Scopes = Field(default_factory=list)


class UserPatch(BaseModel):
    role: Role | None = None
    scopes: Scopes | None = None
    disabled: Flag | None = None


class PasswordReset(BaseModel):
    password: str | None = Field(
        default=None, min_length=1, max_length=1024, description="none: generate one"
    )


class PasswordResetResult(BaseModel):
    password: str | None = Field(description="the generated password (shown once), or null")


def _out(info: UserInfo) -> UserOut:
    return UserOut(
        username=info.username,
        role=info.role,
        scopes=list(info.scopes),
        disabled=info.disabled,
        mfa_active=info.mfa_active,
        mfa_pending=info.mfa_pending,
        recovery_codes_left=info.recovery_codes_left,
        locked_until=iso(info.locked_until_ns),
        sessions=info.sessions,
        created_at=iso(info.created_ns or None),
        changed_at=iso(info.changed_ns or None),
    )


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(lambda: fn(*args, **kwargs))
    except IdentityError as exc:
        raise identity_problem(exc) from None


async def _change(principal: Principal, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """An identity change by ``principal``: audited as them, checked against their role."""
    return await _call(fn, *args, actor=principal.actor, caller=principal, **kwargs)


async def _user(ctx: ApiContext, name: str, principal: Principal) -> UserOut:
    return _out(await _call(ctx.identity.user_info, name, principal))


@router.get(
    "",
    summary="Every user (no password hash, no secret)",
    responses=guarded(Resource.USERS, Action.READ, 503),
)
async def list_users(principal: Reader, ctx: Ctx) -> list[UserOut]:
    infos: list[UserInfo] = await _call(ctx.identity.list_users, principal)
    return [_out(i) for i in infos]


@router.post(
    "",
    status_code=201,
    summary="Add a user (the password policy applies)",
    responses=guarded(
        Resource.USERS,
        Action.WRITE,
        (409, "the user exists"),
        (422, "invalid username, password (policy), role or scopes"),
        503,
    ),
)
async def add_user(body: UserCreate, principal: Writer, ctx: Ctx) -> UserOut:
    user = await _change(
        principal, ctx.identity.add_user, body.username, body.password, body.role, body.scopes
    )
    return await _user(ctx, user.username, principal)


@router.get(
    "/{name}",
    summary="One user",
    responses=guarded(Resource.USERS, Action.READ, (404, "no such user"), 503),
)
async def get_user(name: Username, principal: Reader, ctx: Ctx) -> UserOut:
    return await _user(ctx, name, principal)


@router.patch(
    "/{name}",
    summary="Change a user's role, scopes or disabled flag (disabling ends their sessions)",
    responses=guarded(
        Resource.USERS,
        Action.WRITE,
        (404, "no such user"),
        (409, "the last enabled admin cannot lose the role or be disabled"),
        (422, "invalid role or scopes"),
        503,
    ),
)
async def patch_user(name: Username, body: UserPatch, principal: Writer, ctx: Ctx) -> UserOut:
    await _change(
        principal,
        ctx.identity.update_user,
        name,
        role=body.role,
        scopes=body.scopes,
        disabled=body.disabled,
    )
    return await _user(ctx, name, principal)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete a user (their sessions end at once)",
    responses=guarded(
        Resource.USERS,
        Action.WRITE,
        (404, "no such user"),
        (409, "the last enabled admin cannot be deleted"),
        503,
    ),
)
async def delete_user(name: Username, principal: Writer, ctx: Ctx) -> Response:
    await _change(principal, ctx.identity.delete_user, name)
    return Response(status_code=204)


@router.post(
    "/{name}/reset-password",
    summary="Set or generate a new password; the user's sessions end, a lockout is lifted",
    responses=guarded(
        Resource.USERS,
        Action.WRITE,
        (404, "no such user"),
        (422, "the password breaks the policy"),
        503,
    ),
)
async def reset_password(
    name: Username, principal: Writer, ctx: Ctx, body: PasswordReset | None = None
) -> PasswordResetResult:
    password = body.password if body is not None else None
    generated = await _change(principal, ctx.identity.reset_password, name, password)
    return PasswordResetResult(password=generated)


@router.post(
    "/{name}/reset-mfa",
    summary="Remove a user's second factor (lost phone); their sessions end",
    responses=guarded(Resource.USERS, Action.WRITE, (404, "no such user"), 503),
)
async def reset_mfa(name: Username, principal: Writer, ctx: Ctx) -> UserOut:
    await _change(principal, ctx.identity.reset_mfa, name)
    return await _user(ctx, name, principal)
