"""``/api/auth``: log in (password, then a second factor), refresh, log out, who am I,
enrol a second factor, change one's own password.

Login answers an access token (short-lived, ``api.token_ttl``) and a refresh token
(``POST /api/auth/refresh`` rotates it: each refresh token works once; presenting a
used one again ends the session).  Refusals are problems with ``reason``:
``credentials`` (401: wrong username or password), ``mfa_required`` (401: send ``otp``
or ``recovery_code`` too), ``mfa_invalid`` (401: wrong or replayed code), ``locked``
(429 with ``Retry-After``: too many failed logins).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from isthmus.api.deps import Bearer, Ctx, authenticated, public
from isthmus.api.problems import ApiProblem, problem_responses
from isthmus.api.routers.identity_problems import identity_problem, iso
from isthmus.model.durations import format_ns
from isthmus.security.errors import IdentityError, InvalidToken, LoginRefused
from isthmus.security.identity import LoginResult
from isthmus.security.rbac import Principal

router = APIRouter(prefix="/api/auth", tags=["auth"])

SignedIn = Annotated[Principal, Depends(authenticated())]
Enrolling = Annotated[Principal, Depends(authenticated(allow_pending=True))]


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    otp: str | None = Field(
        default=None, max_length=16, description="the current 6-digit code (when MFA is active)"
    )
    recovery_code: str | None = Field(
        default=None, max_length=64, description="instead of otp: a one-time recovery code"
    )


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=256)


class LoginResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_token: str = Field(description="for POST /api/auth/refresh; works once")
    refresh_expires_at: str = Field(description="ISO 8601 UTC: the session's absolute end")
    session_id: str
    username: str
    role: str
    scopes: list[str] = Field(description="hierarchy prefixes; empty: the whole enterprise")
    mfa: bool = Field(description="whether this session passed a second factor")
    mfa_enrollment_required: bool = Field(
        description="the role requires MFA and the user has none: this session may only "
        "enrol (POST /api/auth/mfa/enroll, then /verify)"
    )


class Me(BaseModel):
    username: str
    kind: str = Field(description="user (a login session) or token (an API token)")
    role: str
    scopes: list[str]
    session_id: str | None = None
    token_id: str | None = None
    mfa: bool = Field(description="whether this session passed a second factor")
    mfa_active: bool = Field(description="whether the user has an active second factor")
    mfa_enrollment_required: bool
    recovery_codes_left: int | None = None
    expires_at: str | None = Field(default=None, description="ISO 8601 UTC: the token's end")


class Enrollment(BaseModel):
    secret: str = Field(description="the TOTP secret (base32), to type in by hand")
    otpauth_uri: str = Field(description="otpauth://totp/... for authenticator apps")
    qr_svg: str = Field(description="the URI as a QR code, an SVG document")
    qr_data_uri: str = Field(description="the same QR code as a data: URI")


class VerifyRequest(BaseModel):
    otp: str = Field(min_length=1, max_length=16)


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="ten one-time codes, shown only now")


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _response(result: LoginResult) -> LoginResponse:
    return LoginResponse(
        access_token=result.access_token,
        expires_in=result.expires_in,
        refresh_token=result.refresh_token,
        refresh_expires_at=format_ns(result.refresh_expires_at * 1_000_000_000),
        session_id=result.session_id,
        username=result.username,
        role=str(result.role),
        scopes=list(result.scopes),
        mfa=result.mfa,
        mfa_enrollment_required=result.mfa_enrollment_required,
    )


@router.post(
    "/login",
    summary="Exchange a username, password (and one-time code) for tokens",
    responses=problem_responses(
        (
            401,
            "wrong credentials (`reason`: `credentials`), a second factor is needed "
            "(`mfa_required`) or it is wrong (`mfa_invalid`)",
        ),
        (429, "too many failed logins: locked (`reason`: `locked`)"),
        503,
    ),
    dependencies=[Depends(public("signing in is how a caller gets a token"))],
)
async def login(body: LoginRequest, request: Request, ctx: Ctx) -> LoginResponse:
    delay = ctx.identity.login_delay(body.username)
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        result = await asyncio.to_thread(
            lambda: ctx.identity.login(
                body.username,
                body.password,
                _client(request),
                otp=body.otp,
                recovery_code=body.recovery_code,
            )
        )
    except (LoginRefused, IdentityError) as exc:
        raise identity_problem(exc) from None
    return _response(result)


@router.post(
    "/refresh",
    summary="A new access token and refresh token for a refresh token (which is spent)",
    responses=problem_responses(
        (
            401,
            "the refresh token is unknown, used already (the session is then ended) or "
            "its session ended (logout, idle, lifetime, user disabled)",
        ),
        503,
    ),
    dependencies=[Depends(public("the refresh token in the body is the credential"))],
)
async def refresh(body: RefreshRequest, request: Request, ctx: Ctx) -> LoginResponse:
    try:
        result = await asyncio.to_thread(ctx.identity.refresh, body.refresh_token, _client(request))
    except InvalidToken as exc:
        raise ApiProblem(
            401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="isthmus"'},
            reason="authentication",
        ) from None  # fmt: skip
    except IdentityError as exc:
        raise identity_problem(exc) from None
    return _response(result)


@router.post(
    "/logout",
    status_code=204,
    summary="End this session: its access and refresh tokens stop working at once",
    responses=problem_responses(401, (409, "an API token is not a session")),
)
async def logout(principal: Enrolling, ctx: Ctx) -> Response:
    try:
        await asyncio.to_thread(ctx.identity.logout, principal)
    except IdentityError as exc:
        raise identity_problem(exc) from None
    return Response(status_code=204)


@router.get(
    "/me",
    summary="The caller: username, role, scopes, MFA state, token expiry",
    responses=problem_responses(401),
)
async def me(principal: Enrolling, ctx: Ctx, credentials: Bearer) -> Me:
    identity = ctx.identity
    expires_at: str | None = None
    mfa_active = False
    recovery_left: int | None = None
    if principal.kind == "token":
        token = identity.api_tokens.get(principal.token_id or "")
        expires_at = iso(token.expires_ns) if token else None
    else:
        if credentials is not None:
            try:
                claims = identity.tokens.verify(credentials.credentials)
                expires_at = format_ns(claims.expires_at * 1_000_000_000)
            except InvalidToken:
                expires_at = None
        user = identity.users.get(principal.name)
        if user is not None and user.mfa is not None:
            mfa_active = user.mfa.active
            recovery_left = len(user.mfa.recovery) if user.mfa.active else None
    return Me(
        username=principal.name,
        kind=principal.kind,
        role=str(principal.role),
        scopes=list(principal.scopes),
        session_id=principal.token_id if principal.kind == "user" else None,
        token_id=principal.token_id if principal.kind == "token" else None,
        mfa=principal.mfa,
        mfa_active=mfa_active,
        mfa_enrollment_required=principal.extra.get("mfa_enrollment_required") == "true",
        recovery_codes_left=recovery_left,
        expires_at=expires_at,
    )


@router.post(
    "/mfa/enroll",
    summary="Start enrolling a TOTP second factor: a secret, its otpauth URI and QR code",
    responses=problem_responses(
        401, (403, "an API token has no second factor"), (409, "MFA is active already"), 503
    ),
)
async def mfa_enroll(principal: Enrolling, ctx: Ctx) -> Enrollment:
    try:
        e = await asyncio.to_thread(ctx.identity.mfa_enroll, principal)
    except IdentityError as exc:
        raise identity_problem(exc) from None
    return Enrollment(
        secret=e.secret, otpauth_uri=e.otpauth_uri, qr_svg=e.qr_svg, qr_data_uri=e.qr_data_uri
    )


@router.post(
    "/mfa/verify",
    summary="Activate the enrolled second factor with a current code: ten recovery codes",
    responses=problem_responses(
        401,
        (403, "an API token has no second factor"),
        (409, "nothing enrolled, or MFA is active already"),
        (422, "wrong or replayed code (`reason`: `mfa_invalid`); the session stays valid"),
        (429, "too many failed attempts: locked"),
        503,
    ),
)
async def mfa_verify(body: VerifyRequest, principal: Enrolling, ctx: Ctx) -> RecoveryCodes:
    try:
        codes = await asyncio.to_thread(ctx.identity.mfa_verify, principal, body.otp)
    except LoginRefused as exc:
        raise wrong_answer(exc) from None
    except IdentityError as exc:
        raise identity_problem(exc) from None
    return RecoveryCodes(recovery_codes=codes)


@router.post(
    "/password",
    status_code=204,
    summary="Change one's own password (the other sessions end)",
    responses=problem_responses(
        401,
        (403, "an API token has no password"),
        (
            422,
            "the current password is wrong (`reason`: `credentials`; the session stays "
            "valid) or the new one breaks the policy (`invalid_params`)",
        ),
        (429, "too many failed attempts: locked"),
        503,
    ),
)
async def change_password(body: PasswordChange, principal: SignedIn, ctx: Ctx) -> Response:
    try:
        await asyncio.to_thread(
            ctx.identity.change_password, principal, body.current_password, body.new_password
        )
    except LoginRefused as exc:
        raise wrong_answer(exc) from None
    except IdentityError as exc:
        raise identity_problem(exc) from None
    return Response(status_code=204)


def wrong_answer(exc: LoginRefused) -> ApiProblem:
    """A wrong code or current password from a caller whose token is valid: 422, not 401
    (a 401 means "sign in again" to every client); a lockout stays 429."""
    if exc.reason == "locked":
        return identity_problem(exc)
    return ApiProblem(422, str(exc), reason=exc.reason)
