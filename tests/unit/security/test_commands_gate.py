"""The gate end to end over a real store and a real audit log (an in-memory device):
results, approvals, expiry on a manual clock, idempotent ids, restart recovery, the
audit log failing closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from isthmus.model.clock import ManualClock
from isthmus.model.config import CommandsConfig
from isthmus.security.commands import (
    CommandOrder,
    CommandRefused,
    CommandState,
    CommandStore,
    LocalExecutor,
    Reason,
)
from isthmus.security.commands.part import CommandsPart
from tests.unit.security.test_commands_kit import (
    ADMIN,
    COUNT,
    ENABLE,
    ENGINEER,
    FILL,
    LABEL,
    OPERATOR,
    SPEED,
    STATE,
    STEPPED,
    SUPERVISOR,
    SUPERVISOR2,
    UTILITIES_OP,
    VIEWER,
    Device,
    catalog,
    rig,
)


async def refused(coro: object) -> CommandRefused:
    with pytest.raises(CommandRefused) as info:
        await coro  # type: ignore[misc]
    return info.value


# --------------------------------------------------------------------------- results


async def test_a_command_is_written_once_read_back_and_audited(tmp_path: Path) -> None:
    r = rig(tmp_path)
    cmd = await r.gate.submit(OPERATOR, SPEED, 42.5, "raise flow for the rinse")
    assert cmd.state is CommandState.VERIFIED
    assert cmd.read_back == 42.5 and cmd.requested_by == "otto" and cmd.approved_by is None
    assert cmd.written_at_ns is not None and cmd.finished_at_ns is not None
    assert cmd.conduit == "allowed (no zones configured)"
    assert r.device.applied == [(SPEED, 42.5)]
    assert r.actions() == ["command.requested", "command.written", "command.result"]
    result = r.records("command.result")[0]
    assert result["outcome"] == "verified" and result["actor"] == "otto"
    assert result["details"]["read_back"] == 42.5
    assert (await r.gate.get(OPERATOR, cmd.id)) == cmd


@pytest.mark.parametrize(
    ("mode", "state", "applied"),
    [
        ("ok", CommandState.VERIFIED, 1),
        ("refuse", CommandState.FAILED, 0),
        ("lost_before", CommandState.UNCERTAIN, 0),
        ("lost_after", CommandState.UNCERTAIN, 1),
        ("hang", CommandState.UNCERTAIN, 1),
        ("no_read", CommandState.UNCERTAIN, 1),
        ("clamp", CommandState.MISMATCH, 1),
    ],
)
async def test_outcomes(tmp_path: Path, mode: str, state: CommandState, applied: int) -> None:
    """Unknown outcomes are uncertain, never verified; failed only when nothing reached
    the device."""
    r = rig(tmp_path, device=Device(mode=mode))
    cmd = await r.gate.submit(OPERATOR, SPEED, 42.5, "test")
    assert cmd.state is state, cmd.detail
    assert len(r.device.applied) == applied
    assert r.records("command.result")[0]["outcome"] == str(state)
    if state is CommandState.MISMATCH:
        assert cmd.read_back == 1.0
    if state is CommandState.UNCERTAIN:
        assert cmd.read_back is None


async def test_refusals_are_audited_and_nothing_is_written(tmp_path: Path) -> None:
    r = rig(tmp_path)
    cases = [
        (None, SPEED, 1.0, Reason.AUTHENTICATION, 401),
        (VIEWER, SPEED, 50.0, Reason.PERMISSION, 403),
        (OPERATOR, FILL, 500.0, Reason.PERMISSION, 403),
        (OPERATOR, "acme/lyon/nope/a/b/c/d", 1.0, Reason.UNKNOWN_TAG, 404),
        (UTILITIES_OP, FILL.replace("fill_volume_sp", "x"), 1.0, Reason.UNKNOWN_TAG, 404),
        (OPERATOR, STATE, 1, Reason.NOT_WRITABLE, 422),
        (OPERATOR, SPEED, "fast", Reason.TYPE, 422),
        (OPERATOR, SPEED, float("nan"), Reason.TYPE, 422),
        (OPERATOR, SPEED, 99.0, Reason.LIMITS, 422),
        (OPERATOR, STEPPED, 50.0, Reason.RATE, 429),  # no current value: max_step unknown
    ]
    for principal, path, value, reason, status in cases:
        exc = await refused(r.gate.submit(principal, path, value, "test"))
        assert (exc.reason, exc.status) == (reason, status), (path, value)
    assert r.device.applied == []
    refusals = r.records("command.refused")
    assert [rec["details"]["reason"] for rec in refusals] == [str(c[3]) for c in cases]
    assert len(r.records("command.requested")) == len(cases)
    assert r.store.count() == 0


async def test_rate_uses_the_current_value_and_the_last_command(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.current[STEPPED] = (50.0, r.clock.now_ns())
    exc = await refused(r.gate.submit(OPERATOR, STEPPED, 65.0, "too far"))
    assert exc.reason is Reason.RATE and "max_step" in exc.refusal.detail
    assert (await r.gate.submit(OPERATOR, STEPPED, 58.0, "ok")).state is CommandState.VERIFIED
    r.clock.advance(1)
    exc = await refused(r.gate.submit(OPERATOR, STEPPED, 60.0, "too soon"))
    assert exc.reason is Reason.RATE and "min_interval" in exc.refusal.detail
    r.clock.advance(5)
    # the last verified command (58, newer than the sample 50) is the current value now
    assert (await r.gate.submit(OPERATOR, STEPPED, 67.0, "ok")).state is CommandState.VERIFIED
    assert [v for _, v in r.device.applied] == [58.0, 67.0]


# --------------------------------------------------------------------------- approvals


async def test_critical_command_waits_for_a_second_person(tmp_path: Path) -> None:
    r = rig(tmp_path)
    cmd = await r.gate.submit(SUPERVISOR, FILL, 500.0, "recipe B")
    assert cmd.state is CommandState.AWAITING_APPROVAL and r.device.applied == []
    assert cmd.expires_at_ns == r.clock.now_ns() + 15 * 60 * 10**9
    exc = await refused(r.gate.approve(SUPERVISOR, cmd.id, "me"))
    assert exc.reason is Reason.SELF_APPROVAL and exc.status == 403
    exc = await refused(r.gate.approve(OPERATOR, cmd.id, ""))
    assert exc.reason is Reason.PERMISSION
    exc = await refused(r.gate.approve(ENGINEER, cmd.id, ""))
    assert exc.reason is Reason.PERMISSION
    exc = await refused(r.gate.approve(SUPERVISOR2, "nope", ""))
    assert exc.reason is Reason.UNKNOWN_COMMAND and exc.status == 404
    assert r.device.applied == []
    done = await r.gate.approve(SUPERVISOR2, cmd.id, "checked with QA")
    assert done.state is CommandState.VERIFIED and done.approved_by == "sue"
    assert done.comment == "checked with QA" and r.device.applied == [(FILL, 500.0)]
    exc = await refused(r.gate.approve(ADMIN, cmd.id, "again"))
    assert exc.reason is Reason.NOT_AWAITING and exc.status == 409
    assert r.device.applied == [(FILL, 500.0)]
    assert r.actions() == [
        "command.requested",
        "command.awaiting_approval",
        "command.refused",
        "command.refused",
        "command.refused",
        "command.refused",
        "command.approved",
        "command.written",
        "command.result",
        "command.refused",
    ]


async def test_reject(tmp_path: Path) -> None:
    r = rig(tmp_path)
    cmd = await r.gate.submit(ADMIN, FILL, 750.0, "recipe C")
    exc = await refused(r.gate.reject(ADMIN, cmd.id, "mine"))
    assert exc.reason is Reason.SELF_APPROVAL
    done = await r.gate.reject(SUPERVISOR, cmd.id, "wrong recipe")
    assert done.state is CommandState.REJECTED and done.approved_by == "sam"
    assert done.comment == "wrong recipe"
    exc = await refused(r.gate.approve(SUPERVISOR2, cmd.id, ""))
    assert exc.reason is Reason.NOT_AWAITING
    assert r.device.applied == []
    assert r.records("command.rejected")[0]["details"]["comment"] == "wrong recipe"


async def test_expiry_on_the_clock(tmp_path: Path) -> None:
    r = rig(tmp_path)
    first = await r.gate.submit(SUPERVISOR, FILL, 500.0, "a")
    r.clock.advance(60)
    second = await r.gate.submit(SUPERVISOR, FILL, 600.0, "b")
    r.clock.advance(14 * 60 - 1)
    assert await r.gate.expire_due() == 0
    r.clock.advance(1)
    assert await r.gate.expire_due() == 1  # the first one, 15 min old
    assert (await r.gate.get(ADMIN, first.id)).state is CommandState.EXPIRED
    exc = await refused(r.gate.approve(SUPERVISOR2, first.id, "late"))
    assert exc.reason is Reason.EXPIRED and exc.status == 409
    # the second expires at approval time even before a tick noticed
    r.clock.advance(60)
    exc = await refused(r.gate.approve(SUPERVISOR2, second.id, "late"))
    assert exc.reason is Reason.EXPIRED
    assert (await r.gate.get(ADMIN, second.id)).state is CommandState.EXPIRED
    assert r.device.applied == []
    assert len(r.records("command.expired")) == 2


async def test_the_part_expires_and_recovers(tmp_path: Path) -> None:
    r = rig(tmp_path)
    cmd = await r.gate.submit(SUPERVISOR, FILL, 500.0, "a")
    r.clock.advance(16 * 60)
    part = CommandsPart(r.gate, tick=0.01)
    await part.start()
    try:
        for _ in range(200):
            if (await r.gate.get(ADMIN, cmd.id)).state is CommandState.EXPIRED:
                break
            await asyncio.sleep(0.01)
        assert (await r.gate.get(ADMIN, cmd.id)).state is CommandState.EXPIRED
        assert part.health() == {"command-gate": True}
    finally:
        await part.stop(1.0)


# --------------------------------------------------------------------------- idempotency


async def test_same_id_returns_the_first_result_and_never_writes_twice(tmp_path: Path) -> None:
    r = rig(tmp_path)
    first = await r.gate.submit(OPERATOR, SPEED, 42.0, "x", "mes-order-17")
    again = await r.gate.submit(OPERATOR, SPEED, 42.0, "x", "mes-order-17")
    assert first.id == again.id == "mes-order-17" and again == first
    assert r.device.applied == [(SPEED, 42.0)]
    for principal, value, reason in [
        (OPERATOR, 43.0, "x"),
        (OPERATOR, 42.0, "y"),
        (ENGINEER, 42.0, "x"),
    ]:
        exc = await refused(r.gate.submit(principal, SPEED, value, reason, "mes-order-17"))
        assert exc.reason is Reason.CONFLICT and exc.status == 409
    assert r.device.applied == [(SPEED, 42.0)]


async def test_concurrent_retries_wait_for_the_first(tmp_path: Path) -> None:
    r = rig(tmp_path)
    results = await asyncio.gather(
        *(r.gate.submit(OPERATOR, COUNT, 7, "n", "same-id") for _ in range(5))
    )
    assert {c.state for c in results} == {CommandState.VERIFIED}
    assert r.device.applied == [(COUNT, 7)]


async def test_retry_of_an_awaiting_command(tmp_path: Path) -> None:
    r = rig(tmp_path)
    first = await r.gate.submit(SUPERVISOR, FILL, 300.0, "x", "k1")
    again = await r.gate.submit(SUPERVISOR, FILL, 300.0, "x", "k1")
    assert again.state is CommandState.AWAITING_APPROVAL and again.id == first.id
    assert r.store.count() == 1


# --------------------------------------------------------------------------- restarts


async def test_restart_never_sends_a_write_whose_outcome_is_unknown(tmp_path: Path) -> None:
    clock = ManualClock()
    device = Device(mode="hang")
    r = rig(tmp_path, device=device, clock=clock,
            config=CommandsConfig(write_timeout=30, readback_timeout=1))  # fmt: skip
    task = asyncio.create_task(r.gate.submit(OPERATOR, SPEED, 42.0, "x", "k-crash"))
    while not device.applied:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert r.store.get("k-crash").state is CommandState.WRITING  # type: ignore[union-attr]
    task.cancel()  # the process "dies" mid-write: the row stays writing
    for t in list(r.gate._tasks):
        t.cancel()
    await asyncio.sleep(0.01)
    r.store.close()
    # restart
    device2 = Device()
    r2 = rig(tmp_path, device=device2, clock=clock)
    changed = await r2.gate.recover()
    assert [(c.id, c.state) for c in changed] == [("k-crash", CommandState.UNCERTAIN)]
    again = await r2.gate.submit(OPERATOR, SPEED, 42.0, "x", "k-crash")
    assert again.state is CommandState.UNCERTAIN and device2.applied == []
    # the executor itself never claims it again either
    executor = LocalExecutor(catalog(), lambda _: device2, r2.store, clock)
    result = await executor.execute(CommandOrder("k-crash", SPEED, 42.0, "otto"))
    assert result.state is CommandState.UNCERTAIN and device2.applied == []
    recovered = [x for x in r2.records("command.result") if x["details"].get("recovered")]
    assert len(recovered) == 1 and recovered[0]["outcome"] == "uncertain"


async def test_restart_fails_an_approved_command_that_was_never_claimed(tmp_path: Path) -> None:
    clock = ManualClock()
    store = CommandStore.open(tmp_path)
    r = rig(tmp_path, clock=clock)
    cmd = await r.gate.submit(SUPERVISOR, FILL, 500.0, "x")
    from dataclasses import replace

    assert store.transition(
        replace(cmd, state=CommandState.APPROVED), (CommandState.AWAITING_APPROVAL,)
    )
    changed = await rig(tmp_path, clock=clock).gate.recover()
    assert [(c.id, c.state) for c in changed] == [(cmd.id, CommandState.FAILED)]


# --------------------------------------------------------------------------- executor


async def test_the_executor_checks_again_with_its_own_config(tmp_path: Path) -> None:
    clock = ManualClock()
    device = Device()
    store = CommandStore.open(tmp_path)
    # the edge's own config: speed_sp is not writable there, count has a smaller range
    own = catalog(
        [
            {"path": SPEED, "range": [0, 100]},
            {"path": COUNT, "data_type": "int16", "writable": True, "range": [0, 10]},
            {"path": LABEL, "data_type": "string", "writable": True},
        ]
    )
    executor = LocalExecutor(own, lambda _: device, store, clock)
    for order, reason in [
        (CommandOrder("o1", SPEED, 42.0, "otto"), Reason.NOT_WRITABLE),
        (CommandOrder("o2", COUNT, 11, "otto"), Reason.LIMITS),
        (CommandOrder("o3", LABEL, 3, "otto"), Reason.TYPE),
        (CommandOrder("o4", ENABLE, True, "otto"), Reason.UNKNOWN_TAG),
    ]:
        result = await executor.execute(order)
        assert (result.state, result.refusal) == (CommandState.REFUSED, reason)
    late = CommandOrder("o5", COUNT, 3, "otto", expires_at_ns=clock.now_ns())
    assert (await executor.execute(late)).state is CommandState.EXPIRED
    ok = await executor.execute(CommandOrder("o6", COUNT, 3, "otto"))
    assert ok.state is CommandState.VERIFIED
    assert (await executor.execute(CommandOrder("o6", COUNT, 3, "otto"))) == ok
    assert device.applied == [(COUNT, 3)]
    assert store.get("o6").state is CommandState.VERIFIED  # type: ignore[union-attr]


# --------------------------------------------------------------------------- audit


async def test_audit_unavailable_refuses_before_anything_is_written(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.audit.broken = True
    exc = await refused(r.gate.submit(OPERATOR, SPEED, 42.0, "x"))
    assert exc.reason is Reason.AUDIT_UNAVAILABLE and exc.status == 503
    exc = await refused(r.gate.submit(None, SPEED, 42.0, "x"))
    assert exc.reason is Reason.AUDIT_UNAVAILABLE
    assert r.device.applied == []
    # persisted while the request's record was being written: kept as refused
    assert [c.state for c in r.store.find()] == [CommandState.REFUSED]
    events = [e for e in r.events.recent() if e.kind == "command.audit_unavailable"]
    assert events and events[0].severity == "critical"
    # approvals fail closed too
    r.audit.broken = False
    cmd = await r.gate.submit(SUPERVISOR, FILL, 500.0, "x")
    r.audit.broken = True
    exc = await refused(r.gate.approve(SUPERVISOR2, cmd.id, ""))
    assert exc.reason is Reason.AUDIT_UNAVAILABLE
    assert (await r.gate.get(ADMIN, cmd.id)).state is CommandState.AWAITING_APPROVAL
    assert r.device.applied == []
    r.audit.broken = False
    assert (await r.gate.approve(SUPERVISOR2, cmd.id, "")).state is CommandState.VERIFIED


async def test_no_audit_log_no_commands(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.gate.audit = None
    exc = await refused(r.gate.submit(ADMIN, SPEED, 42.0, "x"))
    assert exc.reason is Reason.AUDIT_UNAVAILABLE and r.device.applied == []


# --------------------------------------------------------------------------- reads


async def test_reads_are_scoped(tmp_path: Path) -> None:
    r = rig(tmp_path)
    a = await r.gate.submit(OPERATOR, SPEED, 42.0, "x")
    b = await r.gate.submit(SUPERVISOR, FILL, 500.0, "y")
    assert [c.id for c in await r.gate.find(ADMIN)] == [b.id, a.id]
    assert [c.id for c in await r.gate.find(UTILITIES_OP)] == [a.id]
    exc = await refused(r.gate.get(UTILITIES_OP, b.id))
    assert exc.reason is Reason.UNKNOWN_COMMAND
    waiting = await r.gate.find(ADMIN, states=[CommandState.AWAITING_APPROVAL])
    assert [c.id for c in waiting] == [b.id]
    assert [c.id for c in await r.gate.find(ADMIN, tag="acme/lyon/packaging")] == [b.id]
    assert [c.id for c in await r.gate.find(ADMIN, tag="acme/lyon/packag")] == []
    exc = await refused(r.gate.find(VIEWER))
    assert exc.reason is Reason.PERMISSION


async def test_a_command_the_executor_does_not_send_ends_failed(tmp_path: Path) -> None:
    """Persisted already claimed (one durable write fewer), then not sent: failed, not
    left writing (a restart would call it uncertain)."""
    r = rig(tmp_path, device=Device(name="another-plc"))  # no connector for source "plc"
    cmd = await r.gate.submit(OPERATOR, SPEED, 42.0, "x", "no-connector")
    assert cmd.state is CommandState.FAILED and "not sent" in cmd.detail
    assert r.store.get("no-connector").state is CommandState.FAILED  # type: ignore[union-attr]
    assert not r.store.in_states((CommandState.WRITING, CommandState.APPROVED))
    assert r.store.recover(r.clock.now_ns()) == [] and r.device.applied == []
