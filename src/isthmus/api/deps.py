"""Dependencies shared by the routers: the context, and the one permission check.

Every route declares its permission with exactly one dependency:

* ``Depends(require(Resource.TAGS, Action.READ))`` authenticates the bearer token (401
  problem when missing or invalid), asks the permission matrix (403 problem with
  ``reason: permission`` and ``required: tags:read`` when the role may not), audits
  every refusal, and gives the
  route the caller's :class:`~isthmus.security.rbac.Principal` (whose scopes the route
  applies to every object it returns);
* ``Depends(require_ws(Resource.LIVE, Action.READ))`` does the same for a WebSocket,
  whose first message carries the token (browsers cannot set headers on a WebSocket,
  and tokens in URLs end up in logs);
* ``Depends(authenticated())`` lets any signed-in caller in, whatever the role (who am
  I; one's own password or second factor);
* ``Depends(public("why"))`` says a route needs no token, on purpose.

The returned callables carry ``__permission__`` (a ``(Resource, Action)`` pair),
``__signed_in__`` or ``__public__`` (the reason), so :func:`route_guard` finds what each
route declared: a test fails on any route that declares none, and
``docs/permissions.md`` is generated from the same marks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, FastAPI, WebSocket, WebSocketException
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from isthmus.api.context import ApiContext
from isthmus.api.problems import ApiProblem, problem_responses
from isthmus.security.audit import AuditLog, AuditUnavailable
from isthmus.security.errors import InvalidToken, MfaEnrollmentRequired
from isthmus.security.rbac import MATRIX, Action, Principal, Resource, Role

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="a token from POST /api/auth/login")

PERMISSION_ATTR = "__permission__"
PUBLIC_ATTR = "__public__"
SIGNED_IN_ATTR = "__signed_in__"
WS_AUTH_TIMEOUT_S = 10.0
WS_UNAUTHORIZED = 4401
"""WebSocket close code: no valid token (the 401 of a socket)."""
WS_FORBIDDEN = 4403
"""WebSocket close code: the role may not (the 403 of a socket)."""
_CHALLENGE = 'Bearer realm="isthmus"'


def get_ctx(conn: HTTPConnection) -> ApiContext:
    ctx: ApiContext = conn.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]


# --------------------------------------------------------------------------- authentication


def authenticate(ctx: ApiContext, token: str, *, allow_pending: bool = False) -> Principal:
    """The principal of a bearer token (a login session or an API token).  Raises
    ``InvalidToken`` when it is malformed, expired or revoked, or its user is disabled or
    deleted, and ``MfaEnrollmentRequired`` for a session that must enrol a second factor
    first (unless ``allow_pending``: the enrolment routes); identity audits both."""
    return ctx.identity.authenticate(token, allow_pending=allow_pending)


def client_of(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "?"


_pending: set[asyncio.Task[None]] = set()


async def audit(ctx: ApiContext, what: str, /, *, actor: str | None, **details: Any) -> None:
    """Append a refusal to the audit log (when this server keeps one).  A refusal stands
    whether or not it could be recorded: an unwritable log is reported by the log itself
    (an event, and ``audit.failures``), and reads are not commands, so they do not fail
    closed on it."""
    if ctx.audit is None:
        return
    try:
        await ctx.audit.aappend(what, actor=actor, outcome="denied", **details)
    except AuditUnavailable as exc:
        log.warning("refusal not audited (%s): %s %s", exc, what, details)


def audit_soon(ctx: ApiContext, what: str, /, *, actor: str | None, **details: Any) -> None:
    """:func:`audit` without waiting: for refusals whose timing must not tell anything
    (a read outside the caller's scopes answers exactly like an unknown tag)."""
    if ctx.audit is None:
        return
    task = asyncio.get_running_loop().create_task(audit(ctx, what, actor=actor, **details))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def _denied(principal: Principal, resource: Resource, action: Action) -> str:
    return f"the role {principal.role} may not {action} {resource}"


# --------------------------------------------------------------------------- HTTP routes

Require = Callable[..., Awaitable[Principal]]


_anonymous_audited: weakref.WeakKeyDictionary[AuditLog, dict[str, float]] = (
    weakref.WeakKeyDictionary()
)
_ANONYMOUS_AUDIT_S = 1.0
"""A client without a token is audited at most once a second (scanners, probes)."""


def _audit_anonymous_due(ctx: ApiContext, client: str) -> bool:
    if ctx.audit is None:
        return False
    seen = _anonymous_audited.setdefault(ctx.audit, {})
    now = time.monotonic()
    last = seen.get(client)
    if last is not None and now - last < _ANONYMOUS_AUDIT_S:
        return False
    if len(seen) >= 4096:
        seen.clear()
    seen[client] = now
    return True


async def _principal(
    conn: HTTPConnection,
    ctx: ApiContext,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    allow_pending: bool = False,
) -> Principal:
    """The caller of an HTTP request; else a 401 problem (no or bad token) or a 403
    problem (a session that must enrol a second factor first).  Refused tokens are
    audited by identity, requests without one here."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        client = client_of(conn)
        if _audit_anonymous_due(ctx, client):
            await audit(
                ctx,
                "auth.denied",
                actor=None,
                route=conn.url.path,
                client=client,
                reason="no bearer token",
            )
        raise ApiProblem(
            401,
            "a bearer token is required (POST /api/auth/login)",
            headers={"WWW-Authenticate": _CHALLENGE},
            reason="authentication",
        )
    try:
        return authenticate(ctx, credentials.credentials, allow_pending=allow_pending)
    except MfaEnrollmentRequired as exc:
        raise ApiProblem(403, str(exc), reason="mfa_enrollment_required") from None
    except InvalidToken as exc:
        raise ApiProblem(
            401,
            str(exc),
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            reason="authentication",
        ) from None


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require(resource: Resource, action: Action) -> Require:
    """The dependency of a route that needs ``action`` on ``resource``; it returns the
    caller's principal."""

    async def dependency(conn: HTTPConnection, ctx: Ctx, credentials: Bearer) -> Principal:
        principal = await _principal(conn, ctx, credentials)
        if not principal.can(resource, action):
            await audit(
                ctx,
                "rbac.denied",
                actor=principal.actor,
                route=conn.url.path,
                method=conn.scope.get("method", "GET"),
                resource=str(resource),
                access=str(action),
                role=str(principal.role),
                reason="permission",
            )
            raise ApiProblem(
                403,
                _denied(principal, resource, action),
                reason="permission",
                required=f"{resource}:{action}",
            )
        return principal

    setattr(dependency, PERMISSION_ATTR, (resource, action))
    dependency.__name__ = f"require_{resource}_{action}"
    return dependency


def authenticated(*, allow_pending: bool = False) -> Require:
    """The dependency of a route any signed-in caller may use, whatever the role (who am
    I, my own password or second factor); it returns the caller's principal.
    ``allow_pending``: also a session that must enrol a second factor first (the
    enrolment routes themselves)."""

    async def dependency(conn: HTTPConnection, ctx: Ctx, credentials: Bearer) -> Principal:
        return await _principal(conn, ctx, credentials, allow_pending=allow_pending)

    setattr(dependency, SIGNED_IN_ATTR, True)
    return dependency


def public(reason: str) -> Callable[[], None]:
    """The dependency of a route that needs no token, on purpose (``reason`` says why)."""

    def dependency() -> None:
        return None

    setattr(dependency, PUBLIC_ATTR, reason)
    return dependency


def denied_by_some_role(resource: Resource, action: Action) -> bool:
    return any((resource, action) not in MATRIX[role] for role in Role)


def guarded(
    resource: Resource, action: Action, *more: int | tuple[int, str]
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route guarded by ``require(resource, action)``: 401, 403
    and ``more``."""
    if denied_by_some_role(resource, action):
        forbidden = (
            "the caller's role may not (`reason`: `permission`), or its session must enrol "
            "a second factor first (`mfa_enrollment_required`)"
        )
    else:
        forbidden = "the session must enrol a second factor first (`mfa_enrollment_required`)"
    return problem_responses(401, (403, forbidden), *more)


# --------------------------------------------------------------------------- WebSockets


@dataclass(frozen=True, slots=True)
class WsCaller:
    """Who opened a WebSocket: the principal, the token to check again while the socket
    lives (expiry, revocation, role and scope changes), and the first message."""

    principal: Principal
    token: str
    first: dict[str, Any]


def require_ws(resource: Resource, action: Action) -> Callable[..., Awaitable[WsCaller]]:
    """The dependency of a WebSocket route: accepts the socket, reads the first message
    ``{"token": "<bearer token>", ...}`` and closes the socket with 4401 (missing, late or
    invalid token) or 4403 (the role may not), audited like an HTTP refusal."""

    async def dependency(websocket: WebSocket, ctx: Ctx) -> WsCaller:
        route = websocket.url.path
        await websocket.accept()
        first: Any = None
        try:
            async with asyncio.timeout(WS_AUTH_TIMEOUT_S):
                first = json.loads(await websocket.receive_text())
        except (TimeoutError, ValueError, KeyError):
            pass
        token = first.get("token") if isinstance(first, dict) else None
        if not isinstance(token, str):
            client = client_of(websocket)
            if _audit_anonymous_due(ctx, client):
                await audit(
                    ctx,
                    "auth.denied",
                    actor=None,
                    route=route,
                    client=client,
                    reason="no token in the first message",
                )
            raise WebSocketException(WS_UNAUTHORIZED, 'send {"token": ...} first')
        try:
            principal = authenticate(ctx, token)
        except MfaEnrollmentRequired:
            raise WebSocketException(WS_FORBIDDEN, "enrol a second factor first") from None
        except InvalidToken:
            raise WebSocketException(WS_UNAUTHORIZED, "invalid or expired token") from None
        if not principal.can(resource, action):
            await audit(
                ctx,
                "rbac.denied",
                actor=principal.actor,
                route=route,
                method="WEBSOCKET",
                resource=str(resource),
                access=str(action),
                role=str(principal.role),
                reason="permission",
            )
            raise WebSocketException(WS_FORBIDDEN, _denied(principal, resource, action))
        assert isinstance(first, dict)
        return WsCaller(principal, token, first)

    setattr(dependency, PERMISSION_ATTR, (resource, action))
    dependency.__name__ = f"require_ws_{resource}_{action}"
    return dependency


# --------------------------------------------------------------------------- introspection


@dataclass(frozen=True, slots=True)
class RouteGuard:
    """What a route declared: a permission, any signed-in caller, or public (why)."""

    path: str
    methods: tuple[str, ...]
    permission: tuple[Resource, Action] | None
    signed_in: bool
    public: str | None
    summary: str

    @property
    def declared(self) -> bool:
        return self.permission is not None or self.signed_in or self.public is not None


def route_guard(route: Any) -> RouteGuard | None:
    """The declared guard of an API route (HTTP or WebSocket), given as an app route or
    as FastAPI's route context (what ``app.routes`` holds for an included router: the
    route with its prefix and the router's dependencies); None for what is not an API
    route (static mounts, the OpenAPI document).  ``declared`` is False when the route
    declared nothing; a route that declares two guards is an error."""
    original = getattr(route, "original_route", route)
    if isinstance(original, APIRoute):
        methods = tuple(sorted(route.methods or ()))
        summary = route.summary or route.name
    elif isinstance(original, APIWebSocketRoute):
        methods = ("WEBSOCKET",)
        doc = (getattr(original.endpoint, "__doc__", None) or "").strip()
        summary = doc.splitlines()[0] if doc else route.name
    else:
        return None
    permissions: list[tuple[Resource, Action]] = []
    signed_in = False
    publics: list[str] = []
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        call = dependant.call
        if call is not None:
            if (mark := getattr(call, PERMISSION_ATTR, None)) is not None:
                permissions.append(mark)
            if getattr(call, SIGNED_IN_ATTR, False):
                signed_in = True
            if (why := getattr(call, PUBLIC_ATTR, None)) is not None:
                publics.append(why)
        stack.extend(dependant.dependencies)
    path = route.path_format or route.path
    kinds = len(set(permissions)) + int(signed_in) + len(set(publics))
    if kinds > 1:
        raise ValueError(f"{path} declares {kinds} guards: declare exactly one")
    return RouteGuard(
        path=path,
        methods=methods,
        permission=permissions[0] if permissions else None,
        signed_in=signed_in and not permissions,
        public=publics[0] if publics else None,
        summary=summary,
    )


def route_guards(app: FastAPI) -> list[RouteGuard]:
    """The guard of every API route of ``app``, HTTP and WebSocket, in routing order."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI >= 0.160
    routes: Iterable[Any] = app.routes if iterate is None else iterate(app.routes)
    return [guard for route in routes if (guard := route_guard(route)) is not None]
