"""Every error is an RFC 9457 problem (``application/problem+json``).

``ApiProblem`` is what routers raise; HTTP errors from routing (404, 405), request
validation errors (422, listing the invalid parameters) and anything unexpected (500,
logged with its traceback here, never sent) are turned into the same shape.

The OpenAPI document says so too: routes list the problems they can answer with
``responses=problem_responses(401, 403, 404, 422)``, and :func:`install_problem_handlers`
makes every 4xx/5xx response of the document ``application/problem+json`` with the
:class:`Problem` schema (also FastAPI's default 422, which it would otherwise describe as
its own ``HTTPValidationError`` JSON).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from isthmus.model.durations import parse_time_ns

log = logging.getLogger("isthmus.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class InvalidParam(BaseModel):
    name: str
    location: str = Field(description="query, path, header or body")
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details; refusals may add extension members such as ``reason``."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    invalid_params: list[InvalidParam] | None = Field(
        default=None, description="for 422: every invalid parameter"
    )
    reason: str | None = Field(
        default=None,
        description="why a request was refused, machine-readable: permission, "
        "authentication, not_writable, limits, rate...",
    )


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class ApiProblem(Exception):
    """Raise in a router to answer with a problem; keyword ``extra`` members (e.g.
    ``reason="permission"``) are added to the body as RFC 9457 extension members."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        invalid_params: Sequence[InvalidParam] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.invalid_params = list(invalid_params) if invalid_params is not None else None
        self.headers = dict(headers or {})
        self.extra = extra


def bad_param(name: str, reason: str, location: str = "query") -> ApiProblem:
    """A 422 naming one invalid parameter."""
    return ApiProblem(
        422,
        f"invalid parameter {name!r}: {reason}",
        invalid_params=[InvalidParam(name=name, location=location, reason=reason)],
    )


NS_MAX = 2**63 - 1
"""The largest time (UTC ns) a parameter may name: what an int64 holds."""


def time_param(name: str, text: str, now_ns: int) -> int:
    """A time parameter (ISO 8601 or relative to ``now_ns``: ``-1h``, ``now``) in UTC ns,
    or :func:`bad_param` naming it."""
    try:
        ns = parse_time_ns(text, now_ns)
    except (ValueError, OverflowError) as exc:
        raise bad_param(name, str(exc)) from None
    if not 0 <= ns <= NS_MAX:
        raise bad_param(name, f"{text!r} is outside the representable time range")
    return ns


_DESCRIPTIONS: Mapping[int, str] = {
    400: "malformed request",
    401: "no valid bearer token: missing, malformed, expired or revoked",
    403: "the caller's role may not do this (`reason`: `permission`)",
    404: "not found",
    409: "conflicts with the current state",
    422: "invalid parameter or body: `invalid_params` names each one",
    429: "too many requests: retry after `Retry-After` seconds",
    503: "temporarily unavailable",
}
_HEADERS: Mapping[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": '`Bearer realm="isthmus"`',
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "seconds to wait",
            "schema": {"type": "string"},
        }
    },
}


def problem_responses(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: the problems it can answer with, each
    ``application/problem+json`` with the :class:`Problem` schema.  A status alone gets
    a standard description; ``(404, "unknown tag")`` says more."""
    out: dict[int | str, dict[str, Any]] = {}
    for item in statuses:
        status, description = item if isinstance(item, tuple) else (item, _DESCRIPTIONS[item])
        response: dict[str, Any] = {"model": Problem, "description": description}
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        out[status] = response
    return out


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int,
    detail: str,
    instance: str,
    invalid_params: Sequence[InvalidParam] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body = Problem(
        title=_title(status),
        status=status,
        detail=detail,
        instance=instance,
        invalid_params=list(invalid_params) if invalid_params is not None else None,
    ).model_dump(exclude_none=True)
    for key, value in (extra or {}).items():
        body.setdefault(key, value)  # the standard members cannot be overridden
    return body


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    invalid_params: Sequence[InvalidParam] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ProblemResponse:
    body = problem_body(status, detail, request.url.path, invalid_params, extra)
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


async def _api_problem(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(
        request,
        exc.status,
        exc.detail,
        invalid_params=exc.invalid_params,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _http_exception(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(request, exc.status_code, detail, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path.  Starlette's 405 names only the
    methods of the first route whose path matched (``GET /x`` and ``POST /x`` are two
    routes), so a client told ``Allow: POST`` would never learn of the GET."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI >= 0.160
    routes: Iterable[Any] = request.app.routes if iterate is None else iterate(request.app.routes)
    path = request.url.path
    methods: set[str] = set()
    for route in routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _param_name(loc: Sequence[int | str]) -> tuple[str, str]:
    parts = [str(p) for p in loc]
    if not parts:
        return "request", "body"
    location, rest = parts[0], parts[1:]
    return (".".join(rest) or location), location


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    params: list[InvalidParam] = []
    for error in exc.errors():
        name, location = _param_name(error.get("loc", ()))
        params.append(InvalidParam(name=name, location=location, reason=str(error.get("msg"))))
    names = ", ".join(dict.fromkeys(p.name for p in params))
    return problem_response(request, 422, f"invalid parameter(s): {names}", invalid_params=params)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error with a problem, and say so in the OpenAPI document."""
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WebSocketDisconnect, _gone)
    app.openapi = _problem_openapi(app.openapi)  # type: ignore[method-assign]


async def _gone(websocket: WebSocket, exc: Exception) -> None:
    """A WebSocket client left (e.g. while its first message was awaited): nothing to
    answer, nothing to log."""


PROBLEM_REF = "#/components/schemas/Problem"


def _problem_openapi(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        return document_problems(build())  # FastAPI caches the document: done once

    return openapi


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Make every 4xx/5xx response of an OpenAPI ``document`` an ``application/problem+json``
    :class:`Problem` (in place; idempotent), and drop FastAPI's ``HTTPValidationError``.
    Also says what any route can answer whether it lists it or not: 401 wherever a bearer
    token is taken, 400 wherever a body is (one that cannot be parsed)."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in schemas:
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(problem.pop("$defs", {}))
        schemas["Problem"] = problem
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            if operation.get("security") and "401" not in responses:  # a bearer token
                responses["401"] = {"description": _DESCRIPTIONS[401], "headers": _HEADERS[401]}
            if "requestBody" in operation and "400" not in responses:  # e.g. not UTF-8
                responses["400"] = {"description": "the request body cannot be parsed"}
            for code, response in responses.items():
                if str(code)[0] not in "45" and code != "default":
                    continue
                response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}}
                if code == "422" and response.get("description") == "Validation Error":
                    response["description"] = _DESCRIPTIONS[422]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)  # nothing refers to them any more
    return document


class GuardMiddleware:
    """Outermost safety net and response hygiene.

    * An unexpected exception becomes a 500 problem with a generic detail; the traceback
      goes to the server log only (never re-raised, so servers don't log it twice).
    * Every HTTP response gets ``nosniff``, ``no-referrer`` and ``DENY`` framing headers;
      ``/api`` responses are ``no-store``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        path: str = scope.get("path", "")

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if path.startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if started:
                raise
            body = problem_body(500, "internal error; the server log has the details", path)
            response = ProblemResponse(body, status_code=500)
            await response(scope, receive, guarded_send)
