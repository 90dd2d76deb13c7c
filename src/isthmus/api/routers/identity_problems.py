"""Identity errors as problem responses, shared by the auth, users and tokens routers."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool

from isthmus.api.problems import ApiProblem, InvalidParam
from isthmus.model.durations import format_ns
from isthmus.security.errors import (
    Conflict,
    Forbidden,
    IdentityError,
    LoginRefused,
    NotFound,
    WeakPassword,
)
from isthmus.security.identity import AuditFailed

CHALLENGE = 'Bearer realm="isthmus"'

# What a single field must satisfy is in the schema (the API is a contract).
Scope = Annotated[
    str,
    Field(
        max_length=512,
        pattern=r"^/?[^/\s]([^/]*[^/\s])?(/[^/\s]([^/]*[^/\s])?)*/?$",
        description="a hierarchy prefix such as acme/lyon/utilities",
    ),
]
Scopes = Annotated[
    list[Scope], Field(max_length=100, description="hierarchy prefixes; empty: everywhere")
]
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
        description="letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
    ),
]
Flag = StrictBool


def iso(ns: int | None) -> str | None:
    return None if ns is None else format_ns(ns)


def identity_problem(exc: Exception) -> ApiProblem:
    """The problem response of an identity error (``reason`` names the refusal)."""
    if isinstance(exc, LoginRefused):
        if exc.reason == "locked":
            retry = max(1, round(exc.retry_after or 1))
            return ApiProblem(
                429, str(exc), headers={"Retry-After": str(retry)}, reason="locked",
                retry_after=retry,
            )  # fmt: skip
        if exc.reason == "mfa_required":
            return ApiProblem(
                401, str(exc), headers={"WWW-Authenticate": CHALLENGE}, reason=exc.reason,
                mfa_required=True,
            )  # fmt: skip
        return ApiProblem(401, str(exc), headers={"WWW-Authenticate": CHALLENGE}, reason=exc.reason)
    if isinstance(exc, AuditFailed):
        return ApiProblem(503, str(exc), reason="audit_unavailable")
    if isinstance(exc, NotFound):
        return ApiProblem(404, str(exc))
    if isinstance(exc, Conflict):
        return ApiProblem(409, str(exc), reason="conflict")
    if isinstance(exc, Forbidden):
        return ApiProblem(403, str(exc), reason="permission")
    if isinstance(exc, WeakPassword):
        param = InvalidParam(name="password", location="body", reason=exc.reason)
        return ApiProblem(422, str(exc), invalid_params=[param], reason="password_policy")
    if isinstance(exc, IdentityError):
        if exc.file is not None:  # the users file or the identity database is unreadable
            return ApiProblem(503, "the identity store is unreadable: see the server log")
        name = exc.field or "body"
        param = InvalidParam(name=name, location="body", reason=str(exc))
        return ApiProblem(422, str(exc), invalid_params=[param])
    raise exc
