"""The pure gate steps: every refusal reason, and the order of the steps (the first step
that refuses names itself)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from isthmus.model.catalog import CatalogEntry
from isthmus.model.config import TagConfig
from isthmus.security.commands.model import Command, CommandState, Reason
from isthmus.security.commands.policy import (
    NO_ZONES,
    ConduitDecision,
    check_approval,
    evaluate,
    matches,
)
from isthmus.security.rbac import Principal
from tests.unit.security.test_commands_kit import (
    ADMIN,
    COUNT,
    ENABLE,
    ENGINEER,
    FILL,
    LABEL,
    LINE_SPEED,
    OPERATOR,
    PACKAGING_ADMIN,
    SECADMIN,
    SPEED,
    STATE,
    STEPPED,
    SUPERVISOR,
    SUPERVISOR2,
    TEMP,
    UTILITIES_OP,
    VIEWER,
    catalog,
)

CAT = catalog()
NOW = 1_700_000_000_000_000_000
S = 1_000_000_000


def decide(
    principal: Principal | None,
    path: str,
    value: Any,
    *,
    current: Any = None,
    last: int | None = None,
    conduit: Any = None,
) -> tuple[Reason | None, str]:
    kw: dict[str, Any] = {"conduit": conduit} if conduit is not None else {}
    d = evaluate(
        principal,
        path,
        value,
        CAT.by_path(path),
        current=current,
        last_command_ns=last,
        now_ns=NOW,
        **kw,
    )
    return (d.refusal.reason if d.refusal else None), d.step


def deny(principal: Principal, entry: CatalogEntry, value: Any) -> ConduitDecision:
    return ConduitDecision(False, "conduit it->ot closed (island)")


# --------------------------------------------------------------------------- each reason


@pytest.mark.parametrize(
    ("principal", "path", "value", "reason"),
    [
        (None, SPEED, 50.0, Reason.AUTHENTICATION),
        (VIEWER, SPEED, 50.0, Reason.PERMISSION),
        (SECADMIN, SPEED, 50.0, Reason.PERMISSION),
        (OPERATOR, FILL, 500.0, Reason.PERMISSION),  # critical
        (OPERATOR, ENABLE, True, Reason.PERMISSION),  # high
        (ENGINEER, FILL, 500.0, Reason.PERMISSION),
        (OPERATOR, f"{SPEED}x", 50.0, Reason.UNKNOWN_TAG),
        (UTILITIES_OP, LINE_SPEED, 50.0, Reason.UNKNOWN_TAG),  # out of scope: not leaked
        (PACKAGING_ADMIN, SPEED, 50.0, Reason.UNKNOWN_TAG),
        (OPERATOR, STATE, 1, Reason.NOT_WRITABLE),
        (OPERATOR, SPEED, "50", Reason.TYPE),  # a string for a float tag
        (OPERATOR, SPEED, math.nan, Reason.TYPE),
        (OPERATOR, SPEED, math.inf, Reason.TYPE),
        (OPERATOR, SPEED, -math.inf, Reason.TYPE),
        (OPERATOR, SPEED, True, Reason.TYPE),  # a bool is not a number here
        (ENGINEER, ENABLE, 1, Reason.TYPE),  # nor a number a bool
        (OPERATOR, COUNT, 2.5, Reason.TYPE),
        (OPERATOR, COUNT, "3", Reason.TYPE),
        (OPERATOR, LABEL, 3, Reason.TYPE),
        (OPERATOR, LABEL, "a\x00b", Reason.TYPE),
        (OPERATOR, SPEED, None, Reason.TYPE),
        (OPERATOR, SPEED, [1.0], Reason.TYPE),
        (OPERATOR, SPEED, 150.0, Reason.LIMITS),  # range [0, 100]
        (OPERATOR, SPEED, 97.0, Reason.LIMITS),  # write_limits [5, 95]
        (OPERATOR, SPEED, 2.0, Reason.LIMITS),
        (OPERATOR, SPEED, 1e39, Reason.LIMITS),
        (OPERATOR, SPEED, 10**400, Reason.LIMITS),
        (OPERATOR, COUNT, 40_000, Reason.LIMITS),  # int16
        (OPERATOR, TEMP, 4000.0, Reason.LIMITS),  # raw 40,000 does not fit the int16 register
        (OPERATOR, LABEL, "x" * 5000, Reason.LIMITS),
    ],
)
def test_each_refusal_names_its_reason(
    principal: Principal | None, path: str, value: Any, reason: Reason
) -> None:
    assert decide(principal, path, value)[0] is reason


@pytest.mark.parametrize(
    ("principal", "path", "value"),
    [
        (OPERATOR, SPEED, 50.0),
        (OPERATOR, SPEED, 50),  # an int for a real tag
        (OPERATOR, SPEED, 5.0),  # the write_limits are inclusive
        (OPERATOR, SPEED, 95),
        (ENGINEER, ENABLE, False),
        (OPERATOR, COUNT, 3),
        (OPERATOR, COUNT, 3.0),  # an integral real for an integer tag
        (OPERATOR, LABEL, "batch 42 — ok"),
        (OPERATOR, TEMP, 3276.7),
        (SUPERVISOR, FILL, 500.0),
        (ADMIN, FILL, 1000),
        (UTILITIES_OP, SPEED, 42.5),
        (PACKAGING_ADMIN, FILL, 300.0),
    ],
)
def test_accepted(principal: Principal, path: str, value: Any) -> None:
    assert decide(principal, path, value) == (None, "conduit")


def test_normalised_value_and_conduit_note() -> None:
    d = evaluate(OPERATOR, COUNT, 3.0, CAT.by_path(COUNT), current=None, last_command_ns=None,
                 now_ns=NOW)  # fmt: skip
    assert d.value == 3 and type(d.value) is int
    assert d.conduit == NO_ZONES and not d.approval
    d = evaluate(SUPERVISOR, FILL, 500, CAT.by_path(FILL), current=None, last_command_ns=None,
                 now_ns=NOW)  # fmt: skip
    assert d.value == 500.0 and type(d.value) is float and d.approval


def test_rate() -> None:
    # max_step 10 against the current value; unknown current: refused (cannot check)
    assert decide(OPERATOR, STEPPED, 55.0, current=50.0)[0] is None
    assert decide(OPERATOR, STEPPED, 60.0, current=50.0)[0] is None  # exactly max_step
    assert decide(OPERATOR, STEPPED, 60.5, current=50.0)[0] is Reason.RATE
    assert decide(OPERATOR, STEPPED, 39.0, current=50.0)[0] is Reason.RATE
    assert decide(OPERATOR, STEPPED, 55.0, current=None)[0] is Reason.RATE
    # min_interval 5 s since the last command to the tag
    assert decide(OPERATOR, STEPPED, 55.0, current=50.0, last=NOW - 4 * S)[0] is Reason.RATE
    assert decide(OPERATOR, STEPPED, 55.0, current=50.0, last=NOW - 5 * S)[0] is None


def test_conduit_hook_refuses_with_its_note() -> None:
    d = evaluate(OPERATOR, SPEED, 50.0, CAT.by_path(SPEED), current=None, last_command_ns=None,
                 now_ns=NOW, conduit=deny)  # fmt: skip
    assert d.refusal is not None and d.refusal.reason is Reason.CONDUIT
    assert "island" in d.refusal.detail and d.step == "conduit"


# --------------------------------------------------------------------------- order


def test_the_first_refusing_step_names_itself() -> None:
    """A request failing every step; fixing one step at a time moves the refusal to the
    next step, in the documented order."""
    out_of_scope = Principal("nobody", OPERATOR.role, ("acme/paris",))
    chain = [
        ((None, STATE, math.nan), Reason.AUTHENTICATION, "authentication"),
        ((VIEWER, STATE, math.nan), Reason.PERMISSION, "permission"),
        ((out_of_scope, STATE, math.nan), Reason.UNKNOWN_TAG, "permission"),
        ((OPERATOR, STATE, math.nan), Reason.NOT_WRITABLE, "not_writable"),
        ((OPERATOR, STEPPED, math.nan), Reason.TYPE, "value"),
        ((OPERATOR, STEPPED, 500.0), Reason.LIMITS, "value"),
        ((OPERATOR, STEPPED, 90.0), Reason.RATE, "rate"),
    ]
    for (principal, path, value), reason, step in chain:
        got = decide(principal, path, value, current=10.0, last=NOW - S, conduit=deny)
        assert got == (reason, step), (principal, path, value)
    got = decide(OPERATOR, STEPPED, 15.0, current=10.0, last=NOW - 60 * S, conduit=deny)
    assert got == (Reason.CONDUIT, "conduit")
    assert decide(OPERATOR, STEPPED, 15.0, current=10.0, last=NOW - 60 * S) == (None, "conduit")
    # permission (criticality) comes before writability, type and limits
    assert decide(OPERATOR, FILL, "lots") == (Reason.PERMISSION, "permission")


# --------------------------------------------------------------------------- approvals


def pending(**kw: Any) -> Command:
    base: dict[str, Any] = {
        "id": "c1",
        "tag": FILL,
        "value": 500.0,
        "reason": "recipe change",
        "requested_by": SUPERVISOR.actor,
        "requested_role": "supervisor",
        "state": CommandState.AWAITING_APPROVAL,
        "created_at_ns": NOW,
        "updated_at_ns": NOW,
        "expires_at_ns": NOW + 900 * S,
    }
    return Command(**{**base, **kw})


def test_approval_checks_in_order() -> None:
    cmd = pending()
    assert check_approval(SUPERVISOR2, cmd, now_ns=NOW) is None
    assert check_approval(ADMIN, cmd, now_ns=NOW) is None

    def reason(p: Principal | None, c: Command, now: int = NOW) -> Reason | None:
        r = check_approval(p, c, now_ns=now)
        return r.reason if r else None

    assert reason(None, cmd) is Reason.AUTHENTICATION
    assert reason(OPERATOR, cmd) is Reason.PERMISSION
    assert reason(ENGINEER, cmd) is Reason.PERMISSION
    assert reason(UTILITIES_OP, cmd) is Reason.PERMISSION
    scoped = Principal("sv", SUPERVISOR.role, ("acme/lyon/utilities",))
    assert reason(scoped, cmd) is Reason.UNKNOWN_COMMAND
    assert reason(SUPERVISOR, cmd) is Reason.SELF_APPROVAL
    assert reason(SUPERVISOR2, cmd, NOW + 900 * S) is Reason.EXPIRED
    assert reason(SUPERVISOR2, pending(state=CommandState.EXPIRED)) is Reason.EXPIRED
    assert reason(SUPERVISOR2, pending(state=CommandState.VERIFIED)) is Reason.NOT_AWAITING
    assert reason(SUPERVISOR2, pending(state=CommandState.REJECTED)) is Reason.NOT_AWAITING
    # own command, expired: still "not your own" first
    assert reason(SUPERVISOR, cmd, NOW + 901 * S) is Reason.SELF_APPROVAL


# --------------------------------------------------------------------------- read back


def tag(**kw: Any) -> TagConfig:
    return TagConfig.model_validate({"path": "a/b/c/d/e", **kw})


def test_read_back_tolerance_per_type() -> None:
    real = tag(data_type="float32")
    assert matches(real, 62.5, 62.5)
    assert matches(real, 0.1, 0.10000000149011612)  # float32 rounding
    assert matches(real, 1000.0, 1000.0009)
    assert not matches(real, 1000.0, 1000.002)
    assert not matches(real, 1.0, math.nan)
    assert not matches(real, 1.0, "1.0")
    scaled = tag(data_type="int16", scale=0.1, offset=-50)
    assert matches(scaled, 21.37, 21.4)  # raw 714 → 21.4: within half a step (0.05)
    assert not matches(scaled, 21.37, 21.5)
    integer = tag(data_type="int32")
    assert matches(integer, 7, 7.0) and matches(integer, 7, 7)
    assert not matches(integer, 7, 7.000001)
    assert matches(integer, 2**40 + 1, 2**40 + 1)
    boolean = tag(data_type="bool")
    assert matches(boolean, True, True) and matches(boolean, True, 1.0)
    assert not matches(boolean, True, False) and not matches(boolean, False, 2.0)
    text = tag(data_type="string")
    assert matches(text, "RUN", "RUN") and not matches(text, "RUN", "RUN ")
    assert not matches(text, "1", 1)


def test_policy_is_pure() -> None:
    """The policy module imports no I/O library (the architecture's pure core)."""
    import ast
    from pathlib import Path

    import isthmus.security.commands.policy as policy

    tree = ast.parse(Path(policy.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    for forbidden in ("asyncio", "sqlite3", "socket", "os", "httpx", "pymodbus", "asyncua"):
        assert not any(n == forbidden or n.startswith(forbidden + ".") for n in names)
