"""Commands across sites: the hub's executor sends each order to its site's edge; the
edge's handler executes it there with its own :class:`LocalExecutor`.

::

    hub   CommandGate ─▶ RemoteExecutor ─▶ CommandSender ══ JetStream ══╗
           (identity, permission, limits and approval against the       ║
            settings the edges publish; the order is journalled         ║
            ``writing`` before it is sent)                              ║
    edge                    CommandReceiver ◀════════════════════════════╝
                              └▶ EdgeCommandHandler: stored result? → it, again
                                                    expired (edge clock)? → expired
                                                    audit, LocalExecutor (writable,
                                                    limits, persisted id, write,
                                                    read back), audit

*Never twice.*  The hub re-sends an order only with the same id (JetStream drops the
copy); the edge answers any id it has seen with the result it stored — looked up
*before* the expiry check, so an order executed in time and redelivered late (an edge
killed before its answer left) is reported as what happened, not as ``expired``.

*Never late.*  ``expires_at_ns`` travels with the order; the edge refuses it
(``expired``) when its own clock is past it, before anything is written.  Clocks of hub
and edge must agree (NTP): a skew moves the expiry by as much.

*Never success by default.*  A result that has not arrived by the order's expiry plus
``grace`` (time for a write and read back that began just before it) is ``uncertain``:
the edge may have executed it, or will refuse it.  The hub keeps looking for the edge's
answer (``settle_window``, 1 h) and, when it comes (an edge back from an outage answers
``expired``), replaces the ``uncertain`` by it, audited.  :meth:`RemoteExecutor.resume`
does the same, after a hub restart, for the orders it had sent (it never re-sends them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from isthmus.model.clock import Clock
from isthmus.observe.metrics import Metrics
from isthmus.security.commands.executor import CommandExecutor
from isthmus.security.commands.gate import (
    Auditor,
    command_details,
    result_details,
)
from isthmus.security.commands.gate import append_in_thread as _append
from isthmus.security.commands.model import (
    Command,
    CommandOrder,
    CommandResult,
    CommandState,
    Reason,
    json_value,
)
from isthmus.security.commands.store import CommandStore, as_result
from isthmus.transport.nats.commands import CommandSender

log = logging.getLogger("isthmus.commands.remote")

FORWARDED = "command.forwarded"
"""Hub: an order left for its site's edge."""
RECEIVED = "command.received"
"""Edge: an order from the hub is about to be executed here."""
RESULT = "command.result"

AuditSource = Callable[[], Auditor | None]
"""The audit log, asked at each use (the composition root attaches it after the parts
are built); None from it: no audit log, so nothing is executed."""

NO_RESULT = "no result from site"
"""How the detail of an ``uncertain`` for want of an answer begins (a restarted hub
goes on looking for the answers of those)."""

DEFAULT_TTL_S = 15 * 60.0
"""Expiry of an order that has none (the gate gives every order one)."""


def site_of(tag: str) -> str:
    """The site of a full UNS path (enterprise/site/...): its second segment."""
    parts = tag.strip("/").split("/")
    if len(parts) < 3 or not parts[1]:
        raise ValueError(f"{tag!r} is not a full UNS path (enterprise/site/...)")
    return parts[1]


def result_of(command_id: str, wire: dict[str, Any]) -> CommandResult:
    """A decoded wire result as the gate's :class:`CommandResult`."""
    try:
        refusal = Reason(wire["refusal"]) if wire.get("refusal") else None
    except ValueError:
        refusal = None
    return CommandResult(
        command_id,
        CommandState(wire["state"]),
        read_back=wire.get("read_back"),
        detail=str(wire.get("detail") or ""),
        written_at_ns=wire.get("written_at_ns"),
        finished_at_ns=wire.get("finished_at_ns"),
        refusal=refusal,
        extra={"site": wire.get("site"), "edge": wire.get("edge")},
    )


def wire_result(result: CommandResult) -> dict[str, Any]:
    """A :class:`CommandResult` as the receiver publishes it (JSON-safe values)."""
    return {
        "state": str(result.state),
        "read_back": json_value(result.read_back),
        "detail": result.detail,
        "written_at_ns": result.written_at_ns,
        "finished_at_ns": result.finished_at_ns,
        "refusal": None if result.refusal is None else str(result.refusal),
    }


class RemoteExecutor:
    """The hub's :class:`CommandExecutor`: every order goes to the edge of its tag's
    site (the second segment of the UNS path) and its result comes back.

    ``journal`` (the hub's :class:`CommandStore`): the order is claimed ``writing``
    before it is sent and its result recorded, like :class:`LocalExecutor` does, so a
    hub that stops meanwhile never reports it ``failed`` (nor sends it again); a late
    answer replaces an ``uncertain`` there (see the module docstring).
    """

    def __init__(
        self,
        sender: CommandSender,
        clock: Clock,
        *,
        journal: CommandStore | None = None,
        audit: AuditSource | None = None,
        grace: float = 12.0,
        default_ttl: float = DEFAULT_TTL_S,
        settle_window: float = 3600.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.sender = sender
        self.clock = clock
        self.journal = journal
        self.audit = audit
        self.grace = grace
        self.default_ttl = default_ttl
        self.settle_window = settle_window
        self.metrics = metrics or sender.metrics
        self._late: set[asyncio.Task[None]] = set()

    def _result(
        self, order: CommandOrder, state: CommandState, detail: str, **kw: Any
    ) -> CommandResult:
        return CommandResult(
            order.id, state, detail=detail, finished_at_ns=self.clock.now_ns(), **kw
        )

    async def execute(self, order: CommandOrder) -> CommandResult:
        try:
            site = site_of(order.tag)
        except ValueError as exc:
            return self._result(order, CommandState.REFUSED, str(exc), refusal=Reason.UNKNOWN_TAG)
        now = self.clock.now_ns()
        expires = order.expires_at_ns
        if expires is None:
            expires = now + int(self.default_ttl * 1e9)
        if now >= expires:
            return self._result(order, CommandState.EXPIRED, "expired before it was sent")
        order = replace(order, expires_at_ns=expires)
        audit = self.audit() if self.audit is not None else None
        if self.audit is not None:
            try:
                if audit is None:
                    raise RuntimeError("this server keeps no audit log")
                await _append(
                    audit,
                    FORWARDED,
                    actor=order.requested_by,
                    id=order.id,
                    tag=order.tag,
                    site=site,
                    value=json_value(order.value),
                    expires_at_ns=expires,
                )
            except Exception as exc:  # AuditUnavailable, or anything that broke it
                return self._result(
                    order,
                    CommandState.REFUSED,
                    f"not sent: the audit log cannot be written ({exc})",
                    refusal=Reason.AUDIT_UNAVAILABLE,
                )
        if self.journal is not None:
            prior = await asyncio.to_thread(self.journal.claim, order, now)
            if prior is not None:
                return prior  # claimed before: never sent twice from here
        result = await self._await(site, order, expires, send=True)
        if self.journal is not None:
            await asyncio.to_thread(self.journal.record, result, self.clock.now_ns())
            if result.extra.get("no_result"):
                self._settle_later(self.journal, site, order)
        return result

    async def _await(
        self, site: str, order: CommandOrder, expires: int, *, send: bool
    ) -> CommandResult:
        deadline = expires + int(self.grace * 1e9)
        self.metrics.inc("commands.remote.sent" if send else "commands.remote.resumed")
        if send:
            wire = {
                "id": order.id,
                "tag": order.tag,
                "value": order.value,
                "requested_by": order.requested_by,
                "approved_by": order.approved_by,
                "expires_at_ns": expires,
            }
            got = await self.sender.send(site, wire, deadline)
        else:
            got = await self._look_up_until(site, order.id, deadline)
        if got is None:
            self.metrics.inc("commands.remote.no_result")
            return self._result(
                order,
                CommandState.UNCERTAIN,
                f"{NO_RESULT} {site} before the order's expiry: the edge may have "
                "executed it (its link may be down) or will refuse it as expired; check the "
                "device",
                extra={"site": site, "no_result": True},
            )
        return result_of(order.id, got)

    async def _look_up_until(
        self, site: str, command_id: str, deadline: int, *, every: float = 1.0
    ) -> Any:
        """The edge's result, asked every ``every`` s (growing to 30 s when more than 1
        s) until ``deadline``; None if none came."""
        while True:
            try:
                found = await self.sender.lookup(site, command_id)
            except Exception as exc:  # NATS away: try again until the deadline
                log.debug("result look-up of %s failed: %s", command_id, exc)
                found = None
            if found is not None:
                return found
            left = (deadline - self.clock.now_ns()) / 1e9
            if left <= 0:
                return None
            await asyncio.sleep(min(every, left))
            if every > 1.0:
                every = min(30.0, every * 1.5)

    def _settle_later(self, store: CommandStore, site: str, order: CommandOrder) -> None:
        """Keep looking for the edge's answer to an order reported ``uncertain`` for
        want of one; when it comes, it replaces the ``uncertain`` (audited)."""

        async def settle() -> None:
            deadline = self.clock.now_ns() + int(self.settle_window * 1e9)
            got = await self._look_up_until(site, order.id, deadline, every=2.0)
            if got is None:
                return
            cmd = await asyncio.to_thread(store.get, order.id)
            if cmd is not None and cmd.state is CommandState.UNCERTAIN:
                await self._replace(store, cmd, result_of(order.id, got), (CommandState.UNCERTAIN,))

        task = asyncio.create_task(settle(), name=f"command-settle-{order.id}")
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _replace(
        self,
        store: CommandStore,
        cmd: Command,
        result: CommandResult,
        from_states: tuple[CommandState, ...],
    ) -> Command | None:
        """Record a result learnt late (after a restart, after an ``uncertain``)."""
        done = cmd.with_result(result, self.clock.now_ns())
        if not await asyncio.to_thread(store.transition, done, from_states):
            return None
        self.metrics.inc("commands.remote.settled_late")
        audit = self.audit() if self.audit is not None else None
        if audit is not None:
            try:
                await _append(
                    audit,
                    RESULT,
                    actor=cmd.requested_by,
                    outcome=str(result.state),
                    **result_details(cmd, result),
                    settled_late=True,
                )
            except Exception as exc:  # it happened: say so, cannot undo it
                log.error("audit of the late result of command %s failed: %s", cmd.id, exc)
        return done

    def close(self) -> None:
        """Stop looking for late answers (at shutdown)."""
        for task in list(self._late):
            task.cancel()

    async def result(self, tag: str, command_id: str) -> CommandResult | None:
        """The edge's result of a command, if it has published one (e.g. to settle an
        ``uncertain`` one later)."""
        got = await self.sender.lookup(site_of(tag), command_id)
        return None if got is None else result_of(command_id, got)

    async def pending(self, store: CommandStore) -> list[Command]:
        """What a restarted hub must settle: orders journalled ``writing`` (sent, or about
        to be) and those reported ``uncertain`` for want of an answer within the last
        ``settle_window``.  Take it before the gate's recovery turns ``writing`` into
        ``uncertain``."""
        since = self.clock.now_ns() - int(self.settle_window * 1e9)
        rows = await asyncio.to_thread(
            store.in_states, (CommandState.WRITING, CommandState.UNCERTAIN)
        )
        return [
            c
            for c in rows
            if c.state is CommandState.WRITING
            or (c.detail.startswith(NO_RESULT) and (c.finished_at_ns or 0) >= since)
        ]

    async def resume(
        self, store: CommandStore, order_ttl: float, pending: list[Command] | None = None
    ) -> list[Command]:
        """After a hub restart (``pending``: see :meth:`pending`): the orders it had sent
        get their edge's answer, looked up until their expiry (``order_ttl`` after they
        were claimed, plus ``grace``), then for ``settle_window`` like any ``uncertain``
        for want of one; none is sent again.  An answer found replaces the ``uncertain``
        of the gate's recovery.  Returns the commands settled by their expiry."""
        if pending is None:
            pending = await self.pending(store)
        for cmd in pending:
            if cmd.state is CommandState.UNCERTAIN:
                with contextlib.suppress(ValueError):
                    self._settle_later(store, site_of(cmd.tag), cmd.order())

        async def settle(cmd: Command) -> Command | None:
            try:
                site = site_of(cmd.tag)
            except ValueError:
                return None
            expires = cmd.updated_at_ns + int(order_ttl * 1e9)
            result = await self._await(site, cmd.order(), expires, send=False)
            done = await self._replace(
                store, cmd, result, (CommandState.WRITING, CommandState.UNCERTAIN)
            )
            if done is not None and result.extra.get("no_result"):
                self._settle_later(store, site, cmd.order())
            return done

        writing = [c for c in pending if c.state is CommandState.WRITING]
        settled = await asyncio.gather(*(settle(c) for c in writing))
        return [c for c in settled if c is not None]


class EdgeCommandHandler:
    """The edge's handler for :class:`CommandReceiver`: an order dict in, a result dict
    out, executed at most once (see the module docstring)."""

    def __init__(
        self,
        executor: CommandExecutor,
        store: CommandStore,
        clock: Clock,
        *,
        audit: AuditSource | None = None,
        hub: str = "hub",
    ) -> None:
        self.executor = executor
        self.store = store
        self.clock = clock
        self.audit = audit
        self.hub = hub

    async def __call__(self, wire: dict[str, Any]) -> dict[str, Any]:
        order = CommandOrder(
            id=wire["id"],
            tag=wire["tag"],
            value=wire["value"],
            requested_by=wire["requested_by"],
            approved_by=wire.get("approved_by"),
            expires_at_ns=wire["expires_at_ns"],
        )
        known = await asyncio.to_thread(self.store.get, order.id)
        if known is not None and known.state is not CommandState.APPROVED:
            return wire_result(as_result(known))  # seen before: its answer, once more
        now = self.clock.now_ns()
        assert order.expires_at_ns is not None
        if now >= order.expires_at_ns:
            late_s = (now - order.expires_at_ns) / 1e9
            result = CommandResult(
                order.id,
                CommandState.EXPIRED,
                detail=f"the order reached the edge {late_s:.1f} s after its expiry: not executed",
                finished_at_ns=now,
                refusal=Reason.EXPIRED,
            )
            await self._remember(order, result, now)
            await self._audit_after(order, result)
            return wire_result(result)
        if self.audit is not None:
            try:
                audit = self.audit()
                if audit is None:
                    raise RuntimeError("this edge keeps no audit log")
                await _append(
                    audit,
                    RECEIVED,
                    actor=order.requested_by,
                    **command_details(order),
                    approved_by=order.approved_by,
                    via=self.hub,
                    expires_at_ns=order.expires_at_ns,
                )
            except Exception as exc:  # AuditUnavailable: fail closed, nothing written
                return wire_result(
                    CommandResult(
                        order.id,
                        CommandState.REFUSED,
                        detail=f"not written: the edge's audit log cannot be written ({exc})",
                        finished_at_ns=self.clock.now_ns(),
                        refusal=Reason.AUDIT_UNAVAILABLE,
                    )
                )
        result = await self.executor.execute(order)
        await self._audit_after(order, result)
        return wire_result(result)

    async def _remember(self, order: CommandOrder, result: CommandResult, now: int) -> None:
        """Journal an order that is not executed (the edge's command history shows it,
        and a copy arriving later gets the same answer)."""
        cmd = Command.from_order(
            order,
            result.state,
            now,
            detail=result.detail,
            finished_at_ns=result.finished_at_ns,
        )
        await asyncio.to_thread(self.store.insert, cmd)

    async def _audit_after(self, order: CommandOrder, result: CommandResult) -> None:
        audit = self.audit() if self.audit is not None else None
        if audit is None:
            return
        try:
            await _append(
                audit,
                RESULT,
                actor=order.requested_by,
                outcome=str(result.state),
                **result_details(order, result),
                via=self.hub,
            )
        except Exception as exc:  # it happened: say so, cannot undo it
            log.error("audit record of command %s (%s) failed: %s", order.id, result.state, exc)
