"""Any sequence of submits (with or without a client id, retried or not), approvals,
rejections, clock advances, expiry ticks, crashes during a write and restarts: the gate
never writes a command twice, never reports an unknown outcome as verified, and reports
``failed`` only for writes that never reached the device.

The device (in memory) is told per write how it goes: applied and read back; refused;
connection lost before or after it applied the write; no answer; applied but no read
back; clamped.  Each command carries a unique value, so the device's log tells which
command it applied and how often.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from isthmus.model.clock import ManualClock
from isthmus.model.config import CommandsConfig
from isthmus.security.commands import CommandRefused, CommandState
from isthmus.security.rbac import Principal
from tests.unit.security.test_commands_kit import (
    ADMIN,
    COUNT,
    FILL,
    MODES,
    OPERATOR,
    SUPERVISOR,
    SUPERVISOR2,
    Device,
    Rig,
    rig,
)

UNKNOWN = frozenset({"lost_before", "lost_after", "hang", "no_read"})
"""Write modes whose outcome the gate cannot know."""
NOT_APPLIED = frozenset({"refuse", "lost_before"})
CONFIG = CommandsConfig(approval_timeout=600, write_timeout=0.03, readback_timeout=0.03)
REQUESTERS = (OPERATOR, SUPERVISOR, ADMIN)
APPROVERS = (SUPERVISOR, SUPERVISOR2, ADMIN, OPERATOR)


class LoggingDevice(Device):
    """The device, also noting the mode each value was written with."""

    def __init__(self) -> None:
        super().__init__()
        self.write_modes: dict[Any, str] = {}
        self.next_mode = "ok"

    def _next(self) -> str:
        return self.next_mode

    async def write(self, tag: str | int, value: Any) -> None:
        self.write_modes[value] = self.next_mode
        await super().write(tag, value)


class GateMachine(RuleBasedStateMachine):
    commands = Bundle("commands")

    def __init__(self) -> None:
        super().__init__()
        shm = Path("/dev/shm")
        self.dir = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() else None))
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        self.device = LoggingDevice()
        self.rig: Rig = self._rig()
        self.counter = 10  # values never equal the clamped 1.0
        self.bodies: dict[str, tuple[Principal, str, Any, str]] = {}
        self.first: dict[str, Any] = {}

    def _rig(self) -> Rig:
        return rig(self.dir, device=self.device, clock=self.clock, config=CONFIG)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()
        self.rig.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def start(self) -> None:
        self.run(self.rig.gate.recover())

    # ------------------------------------------------------------------ rules

    @rule(
        target=commands,
        critical=st.booleans(),
        requester=st.sampled_from(REQUESTERS),
        mode=st.sampled_from(MODES),
        with_id=st.booleans(),
    )
    def submit(self, critical: bool, requester: Principal, mode: str, with_id: bool) -> Any:
        self.counter += 1
        tag, value = (FILL, 250.0 + self.counter * 0.5) if critical else (COUNT, self.counter)
        cid = f"c{self.counter}" if with_id else None
        self.device.next_mode = mode
        try:
            cmd = self.run(self.rig.gate.submit(requester, tag, value, "why", cid))
        except CommandRefused as exc:
            assert exc.reason == "permission" and critical  # operator, critical tag
            return None
        event(f"submit: {cmd.state}")
        if cid is not None:
            self.bodies[cmd.id] = (requester, tag, value, "why")
            self.first[cmd.id] = cmd
        return cmd.id

    @rule(cid=commands, mode=st.sampled_from(MODES))
    def retry(self, cid: str | None, mode: str) -> None:
        if cid is None or cid not in self.bodies:
            return
        requester, tag, value, why = self.bodies[cid]
        self.device.next_mode = mode
        before = len(self.device.applied)
        again = self.run(self.rig.gate.submit(requester, tag, value, why, cid))
        assert again.id == cid
        assert len(self.device.applied) == before  # a retry never writes
        first = self.first[cid]
        if first.final:
            assert again == first  # the first result, as it was

    @rule(
        cid=commands,
        approver=st.sampled_from(APPROVERS),
        approve=st.booleans(),
        mode=st.sampled_from(MODES),
    )
    def decide(self, cid: str | None, approver: Principal, approve: bool, mode: str) -> None:
        if cid is None:
            return
        self.device.next_mode = mode
        op = self.rig.gate.approve if approve else self.rig.gate.reject
        try:
            cmd = self.run(op(approver, cid, "ok"))
            event(f"decide: {cmd.state}")
        except CommandRefused as exc:
            event(f"decide refused: {exc.reason}")

    @rule(seconds=st.sampled_from([1.0, 60.0, 599.0, 601.0, 3600.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def expire(self) -> None:
        self.run(self.rig.gate.expire_due())

    @rule()
    def crash_during_write(self) -> None:
        """A write that hangs, and the process dies under it; then a restart."""
        self.counter += 1
        value = self.counter
        self.device.next_mode = "hang"
        gate = self.rig.gate
        gate.config = CommandsConfig(approval_timeout=600, write_timeout=30, readback_timeout=1)
        gate.executor.write_timeout = 30  # type: ignore[attr-defined]
        task = self.loop.create_task(gate.submit(OPERATOR, COUNT, value, "crash", f"x{value}"))

        async def until_written() -> None:
            while value not in self.device.write_modes:  # noqa: ASYNC110
                await asyncio.sleep(0.001)

        self.run(until_written())
        task.cancel()
        for t in list(gate._tasks):
            t.cancel()
        with contextlib.suppress(BaseException):
            self.run(asyncio.gather(task, *gate._tasks, return_exceptions=True))
        self.restart()
        cmd = self.rig.store.get(f"x{value}")
        assert cmd is not None and cmd.state is CommandState.UNCERTAIN
        self.bodies[cmd.id] = (OPERATOR, COUNT, value, "crash")
        self.first[cmd.id] = cmd

    @rule()
    def restart(self) -> None:
        self.rig.store.close()
        self.rig = self._rig()
        self.run(self.rig.gate.recover())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def never_written_twice(self) -> None:
        applied = Counter(v for _, v in self.device.applied)
        assert all(n == 1 for n in applied.values()), applied.most_common(3)

    @invariant()
    def outcomes_are_honest(self) -> None:
        applied = {v for _, v in self.device.applied}
        for cmd in self.rig.store.find(limit=10_000):
            mode = self.device.write_modes.get(cmd.value)
            if cmd.state is CommandState.VERIFIED:
                assert mode == "ok" and cmd.value in applied, (cmd, mode)
            if mode in UNKNOWN:
                assert cmd.state is CommandState.UNCERTAIN, (cmd, mode)
            if cmd.state is CommandState.FAILED:
                assert cmd.value not in applied, cmd
            if mode in NOT_APPLIED:
                assert cmd.value not in applied
            if cmd.state in (CommandState.REJECTED, CommandState.EXPIRED):
                assert mode is None and cmd.value not in applied, cmd


GateMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGate = GateMachine.TestCase
