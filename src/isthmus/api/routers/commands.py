"""``/api/commands``: the command gate over HTTP (see docs/commands.md).

A refusal is a problem response whose ``reason`` names the gate step that refused:
401 ``authentication``; 403 ``permission``, ``self_approval``, ``conduit``; 404
``unknown_tag`` (also a tag outside the caller's scopes) or ``unknown_command``; 409
``conflict`` (a command id reused with another body), ``not_awaiting``, ``expired``; 422
``not_writable``, ``type``, ``limits``; 429 ``rate``; 503 ``audit_unavailable``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from isthmus.api.context import ApiContext
from isthmus.api.deps import Ctx, guarded, require
from isthmus.api.problems import ApiProblem
from isthmus.model.durations import format_ns
from isthmus.security.commands import Command, CommandGate, CommandRefused, CommandState
from isthmus.security.commands.gate import CLIENT_ID, MAX_COMMENT, MAX_REASON
from isthmus.security.rbac import Action, Principal, Resource

router = APIRouter(prefix="/api", tags=["commands"])

Commander = Annotated[Principal, Depends(require(Resource.COMMANDS, Action.WRITE))]
Reader = Annotated[Principal, Depends(require(Resource.COMMANDS, Action.READ))]
Approver = Annotated[Principal, Depends(require(Resource.APPROVALS, Action.APPROVE))]
CommandId = Annotated[
    str, Path(min_length=1, max_length=128, pattern=CLIENT_ID.pattern, description="command id")
]
Value = StrictBool | StrictInt | StrictFloat | StrictStr


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = Field(min_length=1, max_length=1024, description="full UNS path of the tag")
    value: Value = Field(description="the new value, of the tag's type (bool, number, text)")
    reason: str = Field(
        min_length=1, max_length=MAX_REASON, description="why: recorded and shown to approvers"
    )
    id: str | None = Field(
        default=None,
        pattern=CLIENT_ID.pattern,
        description="your id for this command: a retry with the same id and body returns "
        "the first result and never writes twice",
    )


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=MAX_COMMENT, description="recorded with it")


class CommandOut(BaseModel):
    id: str
    tag: str = Field(description="full UNS path")
    value: Value
    state: CommandState = Field(
        description="awaiting_approval, verified, mismatch, failed, uncertain, rejected, "
        "expired, refused (approved and writing while it runs)"
    )
    requested_by: str
    requested_role: str
    approved_by: str | None = Field(description="who approved or rejected it")
    reason: str = Field(description="the requester's reason")
    comment: str | None = Field(description="the approver's comment")
    created_at: str
    updated_at: str
    expires_at: str | None = Field(description="awaiting approval until then")
    written_at: str | None
    finished_at: str | None
    read_back: Value | None = Field(description="the device's value after the write")
    detail: str = Field(description="what happened, for people")
    conduit: str = Field(description="what the conduit check said")


class CommandList(BaseModel):
    commands: list[CommandOut]


def command_out(cmd: Command) -> CommandOut:
    def ts(ns: int | None) -> str | None:
        return None if ns is None else format_ns(ns)

    return CommandOut(
        id=cmd.id,
        tag=cmd.tag,
        value=cmd.value,
        state=cmd.state,
        requested_by=cmd.requested_by,
        requested_role=cmd.requested_role,
        approved_by=cmd.approved_by,
        reason=cmd.reason,
        comment=cmd.comment,
        created_at=format_ns(cmd.created_at_ns),
        updated_at=format_ns(cmd.updated_at_ns),
        expires_at=ts(cmd.expires_at_ns),
        written_at=ts(cmd.written_at_ns),
        finished_at=ts(cmd.finished_at_ns),
        read_back=cmd.read_back,
        detail=cmd.detail,
        conduit=cmd.conduit,
    )


def _gate(ctx: ApiContext) -> CommandGate:
    if ctx.commands is None:
        raise ApiProblem(503, "this server has no command gate: it sends no commands")
    return ctx.commands


async def _answer(call: Awaitable[Command]) -> CommandOut:
    """The command a gate call returns, or its refusal as a problem response."""
    try:
        return command_out(await call)
    except CommandRefused as exc:
        raise _problem(exc) from None


def _problem(exc: CommandRefused) -> ApiProblem:
    extra: dict[str, Any] = {"reason": str(exc.reason)}
    if exc.command is not None:
        extra["command"] = command_out(exc.command).model_dump(mode="json")
    headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
    return ApiProblem(exc.status, exc.refusal.detail, headers=headers, **extra)


_SUBMIT = guarded(
    Resource.COMMANDS,
    Action.WRITE,
    (404, "unknown tag (also a tag outside the caller's scopes): `reason` unknown_tag"),
    (409, "the command id is taken by another request: `reason` conflict"),
    (422, "`reason` not_writable, type or limits; or an invalid body (`invalid_params`)"),
    (429, "`reason` rate: max_step or min_interval"),
    (503, "`reason` audit_unavailable: the audit log cannot be written, nothing was sent"),
)
_SUBMIT[403]["description"] = (
    "`reason` permission (role or criticality) or conduit (the zones forbid the crossing)"
)
_DECIDE = guarded(
    Resource.APPROVALS,
    Action.APPROVE,
    (404, "unknown command (also one outside the caller's scopes)"),
    (409, "`reason` not_awaiting (decided already) or expired"),
    (422, "invalid body or id"),
    (429, "`reason` rate: the value moved, the step now exceeds max_step"),
    (503, "`reason` audit_unavailable: the audit log cannot be written, nothing was sent"),
)
_DECIDE[403]["description"] = (
    "`reason` permission (not an approver) or self_approval (one's own command)"
)


_BY_ID = {"command_id": "$response.body#/id"}
_LINKS = {
    "GetCommand": {
        "operationRef": "#/paths/~1api~1commands~1{command_id}/get",
        "parameters": _BY_ID,
        "description": "the command's state",
    },
    "ApproveCommand": {
        "operationRef": "#/paths/~1api~1commands~1{command_id}~1approve/post",
        "parameters": _BY_ID,
        "description": "a second person approves it (awaiting_approval)",
    },
    "RejectCommand": {
        "operationRef": "#/paths/~1api~1commands~1{command_id}~1reject/post",
        "parameters": _BY_ID,
        "description": "a second person rejects it (awaiting_approval)",
    },
}


@router.post(
    "/commands",
    status_code=201,
    summary="Send a command to a tag through the gate (a critical tag waits for approval)",
    responses={
        201: {"description": "awaiting_approval, or the result: verified, mismatch, "
              "failed or uncertain (never success when the outcome is unknown)",
              "links": _LINKS},
        **_SUBMIT,
    },
)  # fmt: skip
async def submit(ctx: Ctx, principal: Commander, body: CommandIn) -> CommandOut:
    gate = _gate(ctx)
    return await _answer(gate.submit(principal, body.tag, body.value, body.reason, body.id))


@router.get(
    "/commands",
    summary="Commands, newest first (those to tags inside the caller's scopes)",
    responses=guarded(Resource.COMMANDS, Action.READ, 422, 503),
)
async def list_commands(
    ctx: Ctx,
    principal: Reader,
    state: Annotated[
        list[CommandState] | None,
        Query(description="only these states (repeat: state=awaiting_approval&state=...)"),
    ] = None,
    tag: Annotated[
        str | None, Query(min_length=1, max_length=1024, description="a tag or a prefix")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CommandList:
    gate = _gate(ctx)
    try:
        found = await gate.find(principal, states=state or (), tag=tag, limit=limit)
    except CommandRefused as exc:
        raise _problem(exc) from None
    return CommandList(commands=[command_out(c) for c in found])


@router.get(
    "/commands/{command_id}",
    summary="One command and its state",
    responses=guarded(
        Resource.COMMANDS, Action.READ, (404, "unknown command (or outside your scopes)"), 422, 503
    ),
)
async def get_command(ctx: Ctx, principal: Reader, command_id: CommandId) -> CommandOut:
    return await _answer(_gate(ctx).get(principal, command_id))


@router.post(
    "/commands/{command_id}/approve",
    summary="Approve a command awaiting approval (not one's own): it is then written",
    responses=_DECIDE,
)
async def approve(
    ctx: Ctx, principal: Approver, command_id: CommandId, body: DecisionIn
) -> CommandOut:
    return await _answer(_gate(ctx).approve(principal, command_id, body.comment))


@router.post(
    "/commands/{command_id}/reject",
    summary="Reject a command awaiting approval (not one's own): it is never written",
    responses=_DECIDE,
)
async def reject(
    ctx: Ctx, principal: Approver, command_id: CommandId, body: DecisionIn
) -> CommandOut:
    return await _answer(_gate(ctx).reject(principal, command_id, body.comment))
