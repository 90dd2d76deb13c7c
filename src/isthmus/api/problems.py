"""Every error is an RFC 9457 problem (``application/problem+json``).

``ApiProblem`` is what routers raise; HTTP errors from routing (404, 405), request
validation errors (422, listing the invalid parameters) and anything unexpected (500,
logged with its traceback here, never sent) are turned into the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("isthmus.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class InvalidParam(BaseModel):
    name: str
    location: str = Field(description="query, path, header or body")
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    invalid_params: list[InvalidParam] | None = Field(
        default=None, description="for 422: every invalid parameter"
    )


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class ApiProblem(Exception):
    """Raise in a router to answer with a problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        invalid_params: Sequence[InvalidParam] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.invalid_params = list(invalid_params) if invalid_params is not None else None
        self.headers = dict(headers or {})


def bad_param(name: str, reason: str, location: str = "query") -> ApiProblem:
    """A 422 naming one invalid parameter."""
    return ApiProblem(
        422,
        f"invalid parameter {name!r}: {reason}",
        invalid_params=[InvalidParam(name=name, location=location, reason=reason)],
    )


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
) -> dict[str, Any]:
    problem = Problem(
        title=_title(status),
        status=status,
        detail=detail,
        instance=instance,
        invalid_params=list(invalid_params) if invalid_params is not None else None,
    )
    return problem.model_dump(exclude_none=True)


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    invalid_params: Sequence[InvalidParam] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    body = problem_body(status, detail, request.url.path, invalid_params)
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


async def _api_problem(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(
        request, exc.status, exc.detail, invalid_params=exc.invalid_params, headers=exc.headers
    )


async def _http_exception(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
    return problem_response(request, exc.status_code, detail, headers=exc.headers)


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
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)


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
