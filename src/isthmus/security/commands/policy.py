"""The pure steps of the command gate, in order; each refuses with its reason.

1. ``authentication`` — a caller is known;
2. ``permission`` — the role may send commands at all, and at the tag's criticality;
   ``unknown_tag`` — the tag does not exist *or lies outside the caller's scopes* (the
   same answer, so a scoped caller learns nothing about tags it may not see);
3. ``not_writable`` — the tag has ``writable: true``;
4. ``type`` / ``limits`` — the value has the tag's type (bool, integer, real, text; NaN
   and infinities are refused) and lies inside its engineering ``range``, its optional
   ``write_limits`` and what its register can hold;
5. ``rate`` — the change from the current value is at most ``max_step``, and at least
   ``min_interval`` passed since the last command to the tag;
6. ``conduit`` — the hook the zones fill (today: allowed, recorded);
7. critical tags wait for a second person's approval (:func:`check_approval`).

No I/O: the gate (``gate.py``) feeds in the catalog entry, the current value, the time of
the last command and the clock's now, and does the persisting, auditing and writing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from isthmus.model.catalog import CatalogEntry
from isthmus.model.config import Criticality, DataType, TagConfig
from isthmus.model.values import INTEGER_TYPES
from isthmus.security.commands.model import Command, CommandState, Reason, Refusal, Value
from isthmus.security.rbac import Action, Principal, Resource, may_approve, may_command

MAX_TEXT = 4096
"""Longest text a string command may carry (characters)."""
REL_TOLERANCE = 1e-6
"""Relative tolerance of a real value's read back."""
INT_LIMITS: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
FLOAT32_MAX = float(struct.unpack(">f", bytes.fromhex("7f7fffff"))[0])
NO_ZONES = "allowed (no zones configured)"

STEPS = (
    "authentication",
    "permission",
    "not_writable",
    "value",
    "rate",
    "conduit",
)
"""The pure steps of :func:`evaluate`, in order (approval and writing follow)."""


# --------------------------------------------------------------------------- conduits


@dataclass(frozen=True, slots=True)
class ConduitDecision:
    allowed: bool
    note: str
    """Recorded with the command and in the audit record (``allowed (no zones...)``)."""


ConduitCheck = Callable[[Principal, CatalogEntry, Value], ConduitDecision]
"""Step 6: may this command cross from the caller's zone to the tag's zone?  The zones
issue fills it; a refusal names the conduit in ``note``."""


def no_zones(principal: Principal, entry: CatalogEntry, value: Value) -> ConduitDecision:
    """The conduit check while no zones are configured: allow, and say so."""
    return ConduitDecision(True, NO_ZONES)


# --------------------------------------------------------------------------- steps


def check_authenticated(principal: Principal | None) -> Refusal | None:
    if principal is None:
        return Refusal(Reason.AUTHENTICATION, "a valid bearer token is required")
    return None


def check_permission(principal: Principal, path: str, entry: CatalogEntry | None) -> Refusal | None:
    """Step 2: the role sends commands at all; the tag exists inside the caller's scopes
    (else ``unknown_tag``, whichever it is); the role may command the tag's criticality."""
    if not principal.can(Resource.COMMANDS, Action.WRITE):
        return Refusal(Reason.PERMISSION, f"the role {principal.role} may not send commands")
    if entry is None or not principal.sees(entry.path):
        return Refusal(Reason.UNKNOWN_TAG, f"no tag {path!r}")
    criticality = entry.config.criticality
    if not may_command(principal.role, criticality):
        return Refusal(
            Reason.PERMISSION,
            f"the role {principal.role} may not command a tag of criticality {criticality}",
        )
    return None


def check_writable(config: TagConfig) -> Refusal | None:
    if not config.writable:
        return Refusal(Reason.NOT_WRITABLE, f"{config.path} is not writable (writable: false)")
    return None


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a real number"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def check_value(config: TagConfig, value: object) -> tuple[Value, Refusal | None]:
    """Step 4: the value as the tag's type (an integral real becomes an int for an integer
    tag, an int a float for a real tag), or the refusal (``type`` or ``limits``)."""
    vtype = config.value_type
    path = config.path
    if vtype is DataType.STRING:
        if not isinstance(value, str):
            return _bad(value, Reason.TYPE, f"{path} takes text, not {_type_name(value)}")
        if "\x00" in value:
            return value, Refusal(Reason.TYPE, f"{path}: text may not contain NUL")
        if len(value) > MAX_TEXT:
            return value, Refusal(
                Reason.LIMITS, f"{path}: {len(value)} characters, at most {MAX_TEXT}"
            )
        return value, None
    if vtype is DataType.BOOL:
        if not isinstance(value, bool):
            return _bad(value, Reason.TYPE, f"{path} takes true or false, not {_type_name(value)}")
        return value, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _bad(value, Reason.TYPE, f"{path} takes a number, not {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        return _bad(value, Reason.TYPE, f"{path}: {value} is not a finite number")
    typed: int | float
    if vtype in INTEGER_TYPES:
        if isinstance(value, float):
            if not value.is_integer():
                return value, Refusal(Reason.TYPE, f"{path} takes an integer, not {value!r}")
            typed = int(value)
        else:
            typed = value
        low, high = INT_LIMITS[vtype]
        if not low <= typed <= high:
            return typed, Refusal(
                Reason.LIMITS, f"{path}: {typed} does not fit a {vtype} [{low}, {high}]"
            )
    else:
        try:
            typed = float(value)
        except OverflowError:
            return value, Refusal(Reason.LIMITS, f"{path}: {value} is too large")
        if config.data_type is DataType.FLOAT32 and abs(typed) > FLOAT32_MAX:
            return typed, Refusal(Reason.LIMITS, f"{path}: {typed:g} does not fit a float32")
        refusal = _check_register(config, typed)
        if refusal is not None:
            return typed, refusal
    for name, limits in (("range", config.range), ("write_limits", config.write_limits)):
        if limits is not None and not limits[0] <= typed <= limits[1]:
            return typed, Refusal(
                Reason.LIMITS,
                f"{path}: {typed!r} is outside its {name} [{limits[0]:g}, {limits[1]:g}]",
            )
    return typed, None


def _bad(value: object, reason: Reason, detail: str) -> tuple[Value, Refusal]:
    shown: Value = value if isinstance(value, bool | int | float | str) else repr(value)
    return shown, Refusal(reason, detail)


def _check_register(config: TagConfig, value: float) -> Refusal | None:
    """A scaled integer register must hold ``(value - offset) / scale``."""
    limits = INT_LIMITS.get(config.data_type)
    if limits is None:
        return None
    if config.scale == 0:
        return Refusal(Reason.LIMITS, f"{config.path}: scale is 0, no raw value gives {value}")
    raw = (value - config.offset) / config.scale
    rounded = math.copysign(math.floor(abs(raw) + 0.5), raw)
    if not limits[0] <= rounded <= limits[1]:
        return Refusal(
            Reason.LIMITS,
            f"{config.path}: {value:g} is raw {rounded:.0f}, outside the {config.data_type} "
            f"register [{limits[0]}, {limits[1]}]",
        )
    return None


def check_rate(
    config: TagConfig,
    value: Value,
    *,
    current: Value | None,
    last_command_ns: int | None,
    now_ns: int,
) -> Refusal | None:
    """Step 5: ``max_step`` against the current value (unknown → refused: the step cannot
    be checked) and ``min_interval`` since the last command to the tag."""
    if config.min_interval is not None and last_command_ns is not None:
        waited = (now_ns - last_command_ns) / 1e9
        if waited < config.min_interval:
            return Refusal(
                Reason.RATE,
                f"{config.path}: the last command was {max(waited, 0):.3g} s ago; "
                f"min_interval is {config.min_interval:g} s",
            )
    step = config.max_step
    if step is not None and not isinstance(value, bool | str):
        if current is None or isinstance(current, bool | str):
            return Refusal(
                Reason.RATE,
                f"{config.path}: its current value is unknown, so max_step {step:g} "
                "cannot be checked",
            )
        change = abs(float(value) - float(current))
        if change > step * (1 + 1e-12):
            return Refusal(
                Reason.RATE,
                f"{config.path}: {current!r} → {value!r} changes by {change:g}, "
                f"more than max_step {step:g}",
            )
    return None


def needs_approval(config: TagConfig) -> bool:
    """Step 7: critical tags need a second person's approval."""
    return config.criticality is Criticality.CRITICAL


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True, slots=True)
class Decision:
    """What the pure steps 1-6 say about one request."""

    value: Value
    """The value as the tag's type (what will be written)."""
    refusal: Refusal | None
    step: str
    """The step that refused, or ``conduit`` (the last one) when all passed."""
    conduit: str = ""
    approval: bool = False
    """Whether step 7 applies (the tag is critical)."""

    @property
    def accepted(self) -> bool:
        return self.refusal is None


def evaluate(
    principal: Principal | None,
    path: str,
    value: object,
    entry: CatalogEntry | None,
    *,
    current: Value | None,
    last_command_ns: int | None,
    now_ns: int,
    conduit: ConduitCheck = no_zones,
) -> Decision:
    """Steps 1 to 6 in order; the first that refuses names itself."""
    shown: Value = value if isinstance(value, bool | int | float | str) else repr(value)
    refusal = check_authenticated(principal)
    if refusal is not None or principal is None:
        return Decision(shown, refusal, "authentication")
    refusal = check_permission(principal, path, entry)
    if refusal is not None or entry is None:
        return Decision(shown, refusal, "permission")
    config = entry.config
    refusal = check_writable(config)
    if refusal is not None:
        return Decision(shown, refusal, "not_writable")
    typed, refusal = check_value(config, value)
    if refusal is not None:
        return Decision(typed, refusal, "value")
    refusal = check_rate(
        config, typed, current=current, last_command_ns=last_command_ns, now_ns=now_ns
    )
    if refusal is not None:
        return Decision(typed, refusal, "rate")
    crossing = conduit(principal, entry, typed)
    if not crossing.allowed:
        return Decision(typed, Refusal(Reason.CONDUIT, crossing.note), "conduit", crossing.note)
    return Decision(typed, None, "conduit", crossing.note, needs_approval(config))


# --------------------------------------------------------------------------- approvals


def check_approval(principal: Principal | None, command: Command, *, now_ns: int) -> Refusal | None:
    """May ``principal`` approve or reject ``command`` now?  In order: authenticated; a
    role that approves (supervisor, admin); the command's tag in the caller's scopes (else
    ``unknown_command``); not the requester; still awaiting approval; not expired."""
    refusal = check_authenticated(principal)
    if refusal is not None or principal is None:
        return refusal
    if not may_approve(principal.role):
        return Refusal(Reason.PERMISSION, f"the role {principal.role} may not approve commands")
    if not principal.sees(command.tag):
        return Refusal(Reason.UNKNOWN_COMMAND, f"no command {command.id!r}")
    if principal.actor == command.requested_by:
        return Refusal(Reason.SELF_APPROVAL, "nobody approves or rejects their own command")
    if command.state is CommandState.EXPIRED or (
        command.state is CommandState.AWAITING_APPROVAL and is_expired(command, now_ns)
    ):
        return Refusal(Reason.EXPIRED, f"command {command.id} expired unapproved")
    if command.state is not CommandState.AWAITING_APPROVAL:
        return Refusal(
            Reason.NOT_AWAITING, f"command {command.id} is {command.state}, not awaiting approval"
        )
    return None


def is_expired(command: Command, now_ns: int) -> bool:
    return command.expires_at_ns is not None and now_ns >= command.expires_at_ns


# --------------------------------------------------------------------------- read back


def tolerance(config: TagConfig, expected: float) -> float:
    """How far a real value's read back may be from what was written: relative 1e-6,
    plus half the scale step of a scaled integer register (its resolution)."""
    tol = REL_TOLERANCE * abs(expected)
    if config.data_type in INTEGER_TYPES and config.value_type is DataType.FLOAT64:
        tol += abs(config.scale) / 2
    return tol


def matches(config: TagConfig, written: Value, read_back: Value) -> bool:
    """Whether the value read back is the one written, per data type: reals within
    :func:`tolerance`; integers, bools and text exactly."""
    vtype = config.value_type
    if vtype is DataType.STRING:
        return isinstance(read_back, str) and read_back == written
    if isinstance(read_back, str):
        return False
    if vtype is DataType.BOOL:
        return bool(read_back) == bool(written) and float(read_back) in (0.0, 1.0)
    if isinstance(read_back, float) and not math.isfinite(read_back):
        return False
    if vtype in INTEGER_TYPES:
        if isinstance(read_back, float) and not read_back.is_integer():
            return False
        return int(read_back) == int(written)
    want = float(written)
    return abs(float(read_back) - want) <= tolerance(config, want)
