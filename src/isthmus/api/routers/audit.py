"""``GET /api/audit``: the tamper-evident audit log, filtered, for security officers.

A caller limited to scopes sees only the records about a tag inside them
(``details.tag``); logins, users, tokens and other records that concern no tag are for
unscoped callers only, as system events are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from isthmus.api.deps import Ctx, guarded, require
from isthmus.api.problems import NS_MAX, ApiProblem, bad_param, time_param
from isthmus.security.rbac import Action, Principal, Resource, in_scope

router = APIRouter(prefix="/api", tags=["audit"])

AuditReader = Annotated[Principal, Depends(require(Resource.AUDIT, Action.READ))]


class AuditRecord(BaseModel):
    seq: int = Field(description="1, 2, 3... across the whole log")
    ts: str = Field(description="UTC, ISO 8601 with nanoseconds")
    ts_ns: int
    action: str = Field(description="dotted: auth.login, rbac.denied, command.result...")
    actor: str | None = Field(description="a username, token:<id>, or null for the system")
    outcome: str = Field(description="ok, denied, failed...")
    details: dict[str, Any]
    prev: str = Field(description="the mac of the record before (the chain)")
    mac: str = Field(description="HMAC-SHA256 of the record with the server's audit key")


class AuditPage(BaseModel):
    records: list[AuditRecord]
    next_after: int = Field(description="with order=asc: pass as `after` for the next page")


def _scope_filter(principal: Principal) -> Callable[[Mapping[str, Any]], bool] | None:
    if not principal.scopes:
        return None
    scopes = principal.scopes

    def visible(record: Mapping[str, Any]) -> bool:
        details = record.get("details")
        tag = details.get("tag") if isinstance(details, dict) else None
        return isinstance(tag, str) and in_scope(tag, scopes)

    return visible


def _time(name: str, text: str | None, now_ns: int) -> int | None:
    return None if text is None else time_param(name, text, now_ns)


@router.get(
    "/audit",
    summary="Audit records (security_admin, supervisor, admin), oldest first unless order=desc",
    responses=guarded(Resource.AUDIT, Action.READ, 422, (503, "this server keeps no audit log")),
)
async def audit(
    ctx: Ctx,
    principal: AuditReader,
    from_: Annotated[
        str | None, Query(alias="from", description="ISO 8601 or relative (-1d); inclusive")
    ] = None,
    to: Annotated[
        str | None, Query(description="ISO 8601 or relative (-1h, now); inclusive")
    ] = None,
    action: Annotated[
        str | None,
        Query(max_length=200, description="an action or its prefix: auth, command.gate"),
    ] = None,
    actor: Annotated[
        str | None, Query(max_length=300, description="a username or token:<id>")
    ] = None,
    outcome: Annotated[
        str | None, Query(max_length=64, description="ok, denied, failed...")
    ] = None,
    after: Annotated[int, Query(ge=0, le=NS_MAX, description="only records with seq > after")] = 0,
    order: Annotated[
        Literal["asc", "desc"], Query(description="asc: oldest first; desc: newest first")
    ] = "asc",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> AuditPage:
    log = ctx.audit
    if log is None:
        raise ApiProblem(503, "this server keeps no audit log")
    now = ctx.clock.now_ns()
    since, until = _time("from", from_, now), _time("to", to, now)
    if since is not None and until is not None and since > until:
        raise bad_param("from", "is after 'to'")
    found = await asyncio.to_thread(
        log.query,
        since,
        until,
        action,
        actor,
        outcome,
        limit,
        after_seq=after,
        newest_first=order == "desc",
        where=_scope_filter(principal),
    )
    records = [AuditRecord.model_validate(r) for r in found]
    next_after = max((r.seq for r in records), default=after)
    return AuditPage(records=records, next_after=next_after)
