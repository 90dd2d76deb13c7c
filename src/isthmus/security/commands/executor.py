"""Step 8-9 of the gate: write exactly once, read back, compare.

:class:`CommandExecutor` is the interface between the gate and whoever writes: the
:class:`LocalExecutor` here (all-in-one and edge), or later a sender to a site's edge.
The local executor trusts nobody upstream: it checks writability and limits again
against its own configuration, refuses an order past its expiry, persists the order as
``writing`` before it writes (a claimed id is never written again, also after a
restart), writes with a timeout through the tag's connector (its
:class:`~isthmus.connectors.base.Commander`), reads the device's value back and
compares it with the data type's tolerance.  An unknown outcome is ``uncertain``, never success.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from isthmus.connectors.base import Commander
from isthmus.model.catalog import TagCatalog
from isthmus.model.clock import Clock
from isthmus.security.commands.model import (
    CommandOrder,
    CommandResult,
    CommandState,
    Reason,
    Value,
)
from isthmus.security.commands.policy import check_value, check_writable, matches
from isthmus.security.commands.store import ExecutionJournal

log = logging.getLogger("isthmus.commands")


class CommandExecutor(Protocol):
    async def execute(self, order: CommandOrder) -> CommandResult: ...


def write_outcome(exc: BaseException) -> CommandState:
    """``failed`` only when the connector says nothing reached the device
    (:class:`~isthmus.connectors.base.CommandWriteError` with outcome ``failed``);
    everything else (a timeout, a dropped connection, an error we do not know) is
    ``uncertain``."""
    outcome = getattr(exc, "outcome", None)
    if outcome == "failed" or str(outcome) == "failed":
        return CommandState.FAILED
    return CommandState.UNCERTAIN


WrittenHook = Callable[[CommandOrder, int], Coroutine[Any, Any, None]]
"""``(order, written_at_ns)``: the device acknowledged the write."""
ResultHook = Callable[[CommandOrder, CommandResult], Coroutine[Any, Any, None]]
"""``(order, result)``: a claimed order's outcome, being journalled."""
CommanderLookup = Callable[[str], Commander | None]
"""The connector of a source, by the source's name (``CatalogEntry.source``)."""


class LocalExecutor:
    """Writes orders through the connectors of this process (see the module docstring)."""

    def __init__(
        self,
        catalog: TagCatalog,
        commanders: CommanderLookup,
        journal: ExecutionJournal,
        clock: Clock,
        *,
        write_timeout: float = 5.0,
        readback_timeout: float = 5.0,
        on_written: WrittenHook | None = None,
        on_result: ResultHook | None = None,
    ) -> None:
        self.catalog = catalog
        self.commanders = commanders
        self.journal = journal
        self.clock = clock
        self.write_timeout = write_timeout
        self.readback_timeout = readback_timeout
        self.on_written = on_written
        """Called (as a task, beside the read back) once the device acknowledged a
        write: the gate audits ``command.written`` there."""
        self.on_result = on_result
        """Called with a claimed order's result while it is journalled: the gate audits
        ``command.result`` there."""
        self.writes = 0
        """Device writes attempted (each claimed id at most once)."""

    def _result(
        self, order: CommandOrder, state: CommandState, detail: str, **kw: Any
    ) -> CommandResult:
        return CommandResult(
            order.id, state, detail=detail, finished_at_ns=self.clock.now_ns(), **kw
        )

    async def execute(self, order: CommandOrder) -> CommandResult:
        entry = self.catalog.by_path(order.tag)
        if entry is None:
            return self._result(
                order,
                CommandState.REFUSED,
                f"no tag {order.tag!r} here",
                refusal=Reason.UNKNOWN_TAG,
            )
        config = entry.config
        refusal = check_writable(config)
        value: Value = order.value
        if refusal is None:
            value, refusal = check_value(config, order.value)
        if refusal is not None:
            return self._result(order, CommandState.REFUSED, refusal.detail, refusal=refusal.reason)
        now = self.clock.now_ns()
        if order.expires_at_ns is not None and now >= order.expires_at_ns:
            return self._result(
                order, CommandState.EXPIRED, "the order arrived after its expiry: not executed"
            )
        commander = self.commanders(entry.source)
        if commander is None:
            return self._result(
                order,
                CommandState.FAILED,
                f"the source {entry.source} cannot write (no connector with write and "
                "read back): not sent",
            )
        prior = await asyncio.to_thread(self.journal.claim, order, now)
        if prior is not None:
            return prior
        result = await self._write(order, config, commander, value)
        journaled = asyncio.to_thread(self.journal.record, result, self.clock.now_ns())
        if self.on_result is None:
            await journaled
        else:
            await asyncio.gather(journaled, self.on_result(order, result))
        return result

    async def _write(
        self, order: CommandOrder, config: Any, commander: Commander, value: Value
    ) -> CommandResult:
        self.writes += 1
        try:
            async with asyncio.timeout(self.write_timeout):
                await commander.write(order.tag, value)
        except TimeoutError:
            return self._result(
                order,
                CommandState.UNCERTAIN,
                f"no answer to the write within {self.write_timeout:g} s: it may have "
                "reached the device (check it)",
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state = write_outcome(exc)
            what = "not written" if state is CommandState.FAILED else "outcome unknown"
            return self._result(order, state, f"{what}: {exc}")
        written_at = self.clock.now_ns()
        hook = self.on_written
        noted: asyncio.Task[None] | None = None
        if hook is not None:
            noted = asyncio.create_task(hook(order, written_at))
        try:
            return await self._read_back(order, config, commander, value, written_at)
        finally:
            if noted is not None:
                await asyncio.shield(noted)

    async def _read_back(
        self,
        order: CommandOrder,
        config: Any,
        commander: Commander,
        value: Value,
        written_at: int,
    ) -> CommandResult:
        try:
            async with asyncio.timeout(self.readback_timeout):
                read_back = await commander.read_back(order.tag, self.readback_timeout)
        except TimeoutError:
            read_back = None
            why = f"no read back within {self.readback_timeout:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            read_back = None
            why = f"the read back failed: {exc}"
        else:
            why = "the device value could not be read back"
        if read_back is None:
            return self._result(
                order,
                CommandState.UNCERTAIN,
                f"written, but {why}: the device's value is unknown",
                written_at_ns=written_at,
            )
        ok = matches(config, value, read_back)
        return self._result(
            order,
            CommandState.VERIFIED if ok else CommandState.MISMATCH,
            f"wrote {value!r}, read back {read_back!r}",
            read_back=read_back,
            written_at_ns=written_at,
        )
