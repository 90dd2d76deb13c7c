"""The gate's long-running part: recovery at start, approval expiry on the clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from isthmus.security.commands.gate import CommandGate

log = logging.getLogger("isthmus.commands")

TICK_S = 1.0


class CommandsPart:
    """Start: commands left ``writing`` by the last stop become ``uncertain`` (never sent
    again).  Then every ``tick`` seconds: commands awaiting approval past their time
    expire.  Stop: writes in flight finish (within ``grace``), then the store closes."""

    name = "command-gate"

    def __init__(self, gate: CommandGate, tick: float = TICK_S) -> None:
        self.gate = gate
        self.tick = tick
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.gate.recover()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.gate.expire_due()
            except Exception:
                log.exception("command gate: expiring approvals failed")

    async def stop(self, grace: float) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.gate.drain(grace)

    def health(self) -> Mapping[str, bool]:
        if self._task is None:
            return {}
        return {self.name: not self._task.done()}
