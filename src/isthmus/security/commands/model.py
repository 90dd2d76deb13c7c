"""What the command gate works with: commands, their states, refusal reasons, and the
order/result pair that crosses to an executor (in-process or on an edge).

Pure: no I/O.  See ``docs/commands.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from isthmus.model.errors import IsthmusError

Value = float | int | bool | str
"""An engineering value: what a command writes and what a read back returns."""


class CommandState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    """A critical tag's command waits for a second person (supervisor or admin)."""
    APPROVED = "approved"
    """Passed every gate step (and the approval, if one was needed); not yet claimed for
    writing.  Transient: a restart finds it ``failed`` (nothing was sent)."""
    WRITING = "writing"
    """Persisted before the write: a restart finds it ``uncertain``, never sends it again."""
    VERIFIED = "verified"
    """Written and read back equal (within the data type's tolerance)."""
    MISMATCH = "mismatch"
    """Written, but the device reads back another value (clamped, overwritten)."""
    FAILED = "failed"
    """Not written: the device refused, or nothing was sent."""
    UNCERTAIN = "uncertain"
    """The write may or may not have reached the device (connection dropped, timeout,
    no read back, restart during the write): check the device, never assume success."""
    REJECTED = "rejected"
    """The approver said no."""
    EXPIRED = "expired"
    """Nobody approved it in time (``commands.approval_timeout``)."""
    REFUSED = "refused"
    """The executor refused it after the gate (its own config disagrees, or expired in
    transit)."""


FINAL_STATES = frozenset(
    {
        CommandState.VERIFIED,
        CommandState.MISMATCH,
        CommandState.FAILED,
        CommandState.UNCERTAIN,
        CommandState.REJECTED,
        CommandState.EXPIRED,
        CommandState.REFUSED,
    }
)
RESULT_STATES = frozenset(
    {
        CommandState.VERIFIED,
        CommandState.MISMATCH,
        CommandState.FAILED,
        CommandState.UNCERTAIN,
        CommandState.EXPIRED,
        CommandState.REFUSED,
    }
)
"""The states a :class:`CommandResult` may carry."""


class Reason(StrEnum):
    """Why the gate refused: the ``reason`` field of the problem response."""

    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    UNKNOWN_TAG = "unknown_tag"
    NOT_WRITABLE = "not_writable"
    TYPE = "type"
    LIMITS = "limits"
    RATE = "rate"
    CONDUIT = "conduit"
    APPROVAL_REQUIRED = "approval_required"
    EXPIRED = "expired"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    SELF_APPROVAL = "self_approval"
    NOT_AWAITING = "not_awaiting"
    CONFLICT = "conflict"
    UNKNOWN_COMMAND = "unknown_command"


HTTP_STATUS: dict[Reason, int] = {
    Reason.AUTHENTICATION: 401,
    Reason.PERMISSION: 403,
    Reason.SELF_APPROVAL: 403,
    Reason.CONDUIT: 403,
    Reason.APPROVAL_REQUIRED: 403,
    Reason.UNKNOWN_TAG: 404,
    Reason.UNKNOWN_COMMAND: 404,
    Reason.CONFLICT: 409,
    Reason.NOT_AWAITING: 409,
    Reason.EXPIRED: 409,
    Reason.NOT_WRITABLE: 422,
    Reason.TYPE: 422,
    Reason.LIMITS: 422,
    Reason.RATE: 429,
    Reason.AUDIT_UNAVAILABLE: 503,
}
"""The HTTP status of each refusal (documented in the OpenAPI of ``/api/commands``)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """One gate step said no: which (``reason``) and why, for people (``detail``)."""

    reason: Reason
    detail: str

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.reason]


class CommandRefused(IsthmusError):
    """The gate refused a request (submit, approve, reject, read): audited already."""

    def __init__(self, refusal: Refusal, command: Command | None = None) -> None:
        super().__init__(f"{refusal.reason}: {refusal.detail}")
        self.refusal = refusal
        self.command = command

    @property
    def reason(self) -> Reason:
        return self.refusal.reason

    @property
    def status(self) -> int:
        return self.refusal.status


@dataclass(frozen=True, slots=True)
class Command:
    """One command through the gate, as persisted in ``DATA_DIR/commands.db``."""

    id: str
    tag: str
    """Full UNS path."""
    value: Value
    reason: str
    """Why the requester sends it (free text, required)."""
    requested_by: str
    """The requester's audit actor (``alice`` or ``token:<id>``)."""
    requested_role: str
    state: CommandState
    created_at_ns: int
    updated_at_ns: int
    expires_at_ns: int | None = None
    """Awaiting approval until then (critical tags only)."""
    approved_by: str | None = None
    """The approver (or the one who rejected it)."""
    comment: str | None = None
    """The approver's comment."""
    read_back: Value | None = None
    detail: str = ""
    """What happened, for people: the refusal, the device error, the comparison."""
    conduit: str = ""
    """What the conduit check said (``allowed (no zones configured)``)."""
    written_at_ns: int | None = None
    finished_at_ns: int | None = None
    fingerprint: str = ""
    """Hash of (requester, tag, value, reason): an idempotent retry must match it."""

    @classmethod
    def from_order(
        cls, order: CommandOrder, state: CommandState, now_ns: int, **fields: Any
    ) -> Command:
        """An order that came from elsewhere (a hub), journalled as it comes: its
        reason and the requester's role are not known here."""
        return cls(
            id=order.id,
            tag=order.tag,
            value=order.value,
            reason="",
            requested_by=order.requested_by,
            requested_role="",
            state=state,
            created_at_ns=now_ns,
            updated_at_ns=now_ns,
            expires_at_ns=order.expires_at_ns,
            approved_by=order.approved_by,
            **fields,
        )

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def order(self) -> CommandOrder:
        return CommandOrder(
            id=self.id,
            tag=self.tag,
            value=self.value,
            requested_by=self.requested_by,
            approved_by=self.approved_by,
            expires_at_ns=self.expires_at_ns,
        )

    def with_result(self, result: CommandResult, now_ns: int) -> Command:
        return replace(
            self,
            state=result.state,
            read_back=result.read_back,
            detail=result.detail,
            written_at_ns=result.written_at_ns,
            finished_at_ns=result.finished_at_ns or now_ns,
            updated_at_ns=now_ns,
        )


@dataclass(frozen=True, slots=True)
class CommandOrder:
    """What the gate hands to an executor (in-process, or sent to an edge)."""

    id: str
    tag: str
    """Full UNS path."""
    value: Value
    requested_by: str
    approved_by: str | None = None
    expires_at_ns: int | None = None
    """An executor refuses the order after this time (a late delivery is not executed
    late); None: no expiry."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What an executor answers: verified, mismatch, failed, uncertain, expired, refused."""

    id: str
    state: CommandState
    read_back: Value | None = None
    detail: str = ""
    written_at_ns: int | None = None
    finished_at_ns: int | None = None
    refusal: Reason | None = None
    """For ``refused``: which executor check said no."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in RESULT_STATES:
            raise ValueError(f"{self.state} is not a result state")


def json_value(value: Value | None) -> Value | None:
    """A value safe in JSON (a non-finite float becomes its text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
