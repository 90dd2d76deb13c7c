"""The command gate: the only way anything reaches a machine.

:meth:`CommandGate.submit` runs the pure steps of :mod:`~isthmus.security.commands.policy`
(authentication, permission and scope, writability, type and limits, rate, conduit), then
either parks a critical tag's command for a second person (:meth:`approve` /
:meth:`reject`, expiry on the clock) or hands it to the executor, after persisting it in
``DATA_DIR/commands.db``.  Every decision is audited *before* it takes effect: when the
audit log cannot be written, the request is refused (``audit_unavailable``) before
anything is written, and an event says so.  A client id makes a request idempotent: a
retry returns the first command, a different body under the same id is a conflict.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.clock import Clock
from isthmus.model.config import CommandsConfig
from isthmus.model.events import Severity
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import Metrics
from isthmus.security.commands.executor import CommandExecutor
from isthmus.security.commands.model import (
    Command,
    CommandOrder,
    CommandRefused,
    CommandResult,
    CommandState,
    Reason,
    Refusal,
    Value,
    json_value,
)
from isthmus.security.commands.policy import (
    ConduitCheck,
    check_approval,
    check_rate,
    evaluate,
    is_expired,
    no_zones,
)
from isthmus.security.commands.store import CommandStore
from isthmus.security.rbac import Action, Principal, Resource, may_approve

log = logging.getLogger("isthmus.commands")

# Audit actions (docs/commands.md lists them with their details).
REQUESTED = "command.requested"
REFUSED = "command.refused"
AWAITING_APPROVAL = "command.awaiting_approval"
APPROVED = "command.approved"
REJECTED = "command.rejected"
EXPIRED = "command.expired"
WRITTEN = "command.written"
RESULT = "command.result"

CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
"""What a client-chosen command id looks like (idempotency key)."""
EVENT_REPEAT_S = 60.0
"""While the audit log stays unwritable, the refusals' event repeats at most this often
(each refusal is counted in ``commands.audit_unavailable``)."""
MAX_REASON = 1000
MAX_COMMENT = 1000


class Auditor(Protocol):
    """What the gate needs of the audit log (:class:`isthmus.security.audit.AuditLog`):
    an append that returns a durable record or raises ``AuditUnavailable``."""

    def append(
        self, action: str, *, actor: str | None, outcome: str = "ok", **details: Any
    ) -> dict[str, Any]: ...


CurrentValue = Callable[[CatalogEntry], tuple[Value, int] | None]
"""The tag's current value and its time (UTC ns), e.g. the historian's last Good
sample; None when unknown."""


def _no_current(entry: CatalogEntry) -> tuple[Value, int] | None:
    return None


async def append_in_thread(
    audit: Auditor, action: str, *, actor: str | None, outcome: str = "ok", **details: Any
) -> None:
    """One audit record from a worker thread (the append blocks on fsync); raises what
    the log raises (``AuditUnavailable``)."""
    await asyncio.to_thread(lambda: audit.append(action, actor=actor, outcome=outcome, **details))


def command_details(cmd: Command | CommandOrder) -> dict[str, Any]:
    """What every audit record of a command names first: its id, tag and value."""
    return {"id": cmd.id, "tag": cmd.tag, "value": json_value(cmd.value)}


def result_details(cmd: Command | CommandOrder, result: Command | CommandResult) -> dict[str, Any]:
    """The details of a ``command.result`` record: the command, what the device read
    back and what happened."""
    return {
        **command_details(cmd),
        "read_back": json_value(result.read_back),
        "detail": result.detail,
    }


def fingerprint(actor: str, tag: str, value: object, reason: str) -> str:
    """What an idempotent retry must repeat: requester, tag, value (with its JSON type)
    and reason."""
    shown = json_value(value) if isinstance(value, bool | int | float | str) else repr(value)
    body = json.dumps([actor, tag, type(value).__name__, shown, reason], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


class CommandGate:
    """See the module docstring.  ``audit`` None: every command is refused
    (``audit_unavailable``), a gate never runs unaudited."""

    def __init__(
        self,
        catalog: TagCatalog,
        store: CommandStore,
        executor: CommandExecutor,
        audit: Auditor | None,
        clock: Clock,
        config: CommandsConfig | None = None,
        *,
        current: CurrentValue = _no_current,
        conduit: ConduitCheck = no_zones,
        events: EventLog | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.executor = executor
        self.audit = audit
        self.clock = clock
        self.config = config or CommandsConfig()
        self.current = current
        self.conduit = conduit
        self.events = events
        self.metrics = metrics or Metrics()
        self._inflight: dict[str, asyncio.Event] = {}
        self._written: dict[str, bool] = {}
        self._results: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[Command]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._recovered = False
        self._unavailable_event_at = -math.inf

    # ------------------------------------------------------------------ audit

    async def _audit(
        self, action: str, actor: str | None, outcome: str = "ok", **details: Any
    ) -> None:
        """Append one record; :class:`CommandRefused` (``audit_unavailable``) if it could
        not be written (the audit log raises its own event; this adds the command's)."""
        audit = self.audit
        error = "this server keeps no audit log"
        if audit is not None:
            try:
                await append_in_thread(audit, action, actor=actor, outcome=outcome, **details)
                return
            except Exception as exc:  # AuditUnavailable, or anything that broke it
                error = str(exc)
        self.metrics.inc("commands.audit_unavailable")
        now = self.clock.monotonic()
        due = now - self._unavailable_event_at >= EVENT_REPEAT_S
        if self.events is not None and due:
            self._unavailable_event_at = now
            self.events.raise_event(
                "command.audit_unavailable",
                "commands",
                f"a command was refused: the audit log cannot be written ({error})",
                severity=Severity.CRITICAL,
                action=action,
                command=details.get("id"),
            )
        raise CommandRefused(
            Refusal(Reason.AUDIT_UNAVAILABLE, f"the audit log cannot be written: {error}")
        )

    async def _audit_after(
        self, action: str, actor: str | None, outcome: str = "ok", **details: Any
    ) -> None:
        """A record of something that already happened (a write): a failure cannot undo
        it, so it is logged and the event raised, not refused."""
        try:
            await self._audit(action, actor, outcome, **details)
        except CommandRefused:
            log.error("audit record %s of command %s could not be written", action, details)

    async def _refuse(
        self,
        refusal: Refusal,
        actor: str | None,
        *,
        command: Command | None = None,
        **details: Any,
    ) -> CommandRefused:
        """Audit a refusal and return the exception to raise (if even the refusal cannot
        be audited, the original reason is still the answer)."""
        self.metrics.inc(f"commands.refused.{refusal.reason}")
        with contextlib.suppress(CommandRefused):
            await self._audit(
                REFUSED,
                actor,
                "refused",
                reason=str(refusal.reason),
                detail=refusal.detail,
                **details,
            )
        return CommandRefused(refusal, command)

    # ------------------------------------------------------------------ submit

    async def submit(
        self,
        principal: Principal | None,
        tag: str,
        value: object,
        reason: str,
        client_id: str | None = None,
    ) -> Command:
        """Steps 1-10 for one request: the command (``awaiting_approval`` or its result),
        or :class:`CommandRefused` naming the first step that refused."""
        await self.recover()
        path = tag.strip("/")
        actor = principal.actor if principal is not None else None
        shown = json_value(value) if isinstance(value, bool | int | float | str) else repr(value)
        ask: dict[str, Any] = {"tag": path, "value": shown, "why": reason}
        if client_id is not None:
            ask["id"] = client_id
        # The request's record is written while the gate decides (and persists): it must
        # exist before any other record of this request and before anything is written.
        requested = asyncio.create_task(
            self._audit(
                REQUESTED,
                actor,
                role=str(principal.role) if principal is not None else None,
                **ask,
            )
        )
        try:
            if client_id is not None and not CLIENT_ID.match(client_id):
                await requested
                raise await self._refuse(
                    Refusal(Reason.CONFLICT, "a command id is 1-128 of A-Z a-z 0-9 . _ : -"),
                    actor,
                    step="id",
                    **ask,
                )
            if principal is not None and client_id is not None:
                existing = await asyncio.to_thread(self.store.get, client_id)
                if existing is not None:
                    await requested
                    return await self._replay(principal, existing, path, value, reason, ask)
            entry = self.catalog.by_path(path)
            lock = self._locks.setdefault(entry.path, asyncio.Lock()) if entry else asyncio.Lock()
            async with lock:
                return await self._decide(
                    principal, path, value, reason, client_id, entry, ask, requested
                )
        finally:
            if not requested.done():
                await asyncio.wait({requested})
            if not requested.cancelled():
                requested.exception()  # retrieved (raised above where it mattered)

    async def _replay(
        self,
        principal: Principal,
        existing: Command,
        path: str,
        value: object,
        reason: str,
        ask: Mapping[str, Any],
    ) -> Command:
        """The same client id again: the first command if the body is the same."""
        same = existing.fingerprint == fingerprint(principal.actor, path, value, reason)
        if not same or not principal.sees(existing.tag):
            raise await self._refuse(
                Refusal(
                    Reason.CONFLICT,
                    f"the command id {existing.id!r} is taken by another request",
                ),
                principal.actor,
                step="id",
                **ask,
            )
        self.metrics.inc("commands.replayed")
        return await self._settled(existing)

    async def _settled(self, cmd: Command) -> Command:
        """``cmd`` once its write (if one runs in this process) has finished."""
        done = self._inflight.get(cmd.id)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    self.config.write_timeout + self.config.readback_timeout + 5
                ):
                    await done.wait()
        return await asyncio.to_thread(self.store.get, cmd.id) or cmd

    async def _decide(
        self,
        principal: Principal | None,
        path: str,
        value: object,
        reason: str,
        client_id: str | None,
        entry: CatalogEntry | None,
        ask: Mapping[str, Any],
        requested: asyncio.Task[None],
    ) -> Command:
        now = self.clock.now_ns()
        current: Value | None = None
        last_ns: int | None = None
        if entry is not None and principal is not None and principal.sees(entry.path):
            cfg = entry.config
            if cfg.max_step is not None:
                current = await self._current_value(entry)
            if cfg.min_interval is not None:
                last_ns = await asyncio.to_thread(self.store.last_command_ns, entry.path)
        decision = evaluate(
            principal,
            path,
            value,
            entry,
            current=current,
            last_command_ns=last_ns,
            now_ns=now,
            conduit=self.conduit,
        )
        actor = principal.actor if principal is not None else None
        if decision.refusal is not None or principal is None or entry is None:
            refusal = decision.refusal or Refusal(Reason.AUTHENTICATION, "no caller")
            await requested
            raise await self._refuse(refusal, actor, step=decision.step, **ask)
        approval = decision.approval
        cmd = Command(
            id=client_id or uuid.uuid4().hex,
            tag=entry.path,
            value=decision.value,
            reason=reason,
            requested_by=principal.actor,
            requested_role=str(principal.role),
            state=CommandState.AWAITING_APPROVAL if approval else CommandState.APPROVED,
            created_at_ns=now,
            updated_at_ns=now,
            expires_at_ns=now + int(self.config.approval_timeout * 1e9) if approval else None,
            conduit=decision.conduit,
            fingerprint=fingerprint(principal.actor, path, value, reason),
        )
        if approval:
            await requested
            await self._audit(
                AWAITING_APPROVAL,
                actor,
                "awaiting",
                **command_details(cmd),
                conduit=cmd.conduit,
                expires_at_ns=cmd.expires_at_ns,
            )
        # Persisted while the request's record is written; nothing is sent before both.
        taken = await asyncio.to_thread(lambda: self.store.insert(cmd, claim=not approval))
        try:
            await requested
        except CommandRefused:
            if taken is None:
                unaudited = replace(
                    cmd,
                    state=CommandState.REFUSED,
                    detail="refused: the audit log cannot be written; nothing was sent",
                    finished_at_ns=self.clock.now_ns(),
                )
                self.store.release(cmd.id)
                await asyncio.to_thread(
                    self.store.transition,
                    unaudited,
                    (CommandState.APPROVED, CommandState.WRITING),
                )
            raise
        if taken is not None:  # the same id raced in meanwhile
            return await self._replay(principal, taken, path, value, reason, ask)
        self.metrics.inc("commands.accepted")
        if approval:
            return cmd
        return await self._execute(cmd)

    async def _current_value(self, entry: CatalogEntry) -> Value | None:
        """The newest of the tag's last Good sample and its last verified command."""
        sample = await asyncio.to_thread(self.current, entry)
        verified = await asyncio.to_thread(self.store.last_verified, entry.path)
        if sample is None or (verified is not None and verified[1] >= sample[1]):
            return None if verified is None else verified[0]  # ties: the command is newer
        return sample[0]

    # ------------------------------------------------------------------ execute

    async def _execute(self, cmd: Command) -> Command:
        """Hand an ``approved`` command to the executor, record and audit the result.
        Shielded: a caller that goes away does not abandon a write half way."""
        done = asyncio.Event()
        self._inflight[cmd.id] = done
        task = asyncio.create_task(self._run(cmd, done), name=f"command-{cmd.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _run(self, cmd: Command, done: asyncio.Event) -> Command:
        try:
            order = replace(
                cmd.order(),
                expires_at_ns=self.clock.now_ns() + int(self.config.deliver_within * 1e9),
            )
            from_states: tuple[CommandState, ...] = (CommandState.APPROVED,)
            try:
                result = await self.executor.execute(order)
            except Exception as exc:  # an executor bug: whether it wrote is unknown
                log.exception("command %s: the executor failed", cmd.id)
                result = CommandResult(
                    cmd.id, CommandState.UNCERTAIN, detail=f"executor error: {exc}"
                )
                from_states = (CommandState.APPROVED, CommandState.WRITING)
            if self.store.release(cmd.id):  # pre-claimed, and the executor did not write
                from_states = (*from_states, CommandState.WRITING)
            now = self.clock.now_ns()
            written_audited = self._written.pop(cmd.id, False)
            result_audited = self._results.pop(cmd.id, False)
            # Results the executor did not journal itself (refused, expired, not sent).
            await asyncio.to_thread(
                self.store.transition, cmd.with_result(result, now), from_states
            )
            final = await asyncio.to_thread(self.store.get, cmd.id) or cmd.with_result(result, now)
            self.metrics.inc(f"commands.{final.state}")
            if final.written_at_ns is not None and not written_audited:
                await self.record_written(final.order(), final.written_at_ns)
            if not result_audited or final.state is not result.state:
                await self._audit_after(
                    RESULT,
                    cmd.requested_by,
                    str(final.state),
                    **result_details(cmd, final),
                    approved_by=final.approved_by,
                )
            return final
        finally:
            self._inflight.pop(cmd.id, None)
            done.set()

    async def record_result(self, order: CommandOrder, result: CommandResult) -> None:
        """Audit a claimed order's result (an executor calls it while it journals the
        result, so the two durable writes overlap)."""
        self._results[order.id] = True
        await self._audit_after(
            RESULT,
            order.requested_by,
            str(result.state),
            **result_details(order, result),
            approved_by=order.approved_by,
        )

    async def record_written(self, order: CommandOrder, written_at_ns: int) -> None:
        """Audit that the device acknowledged the write (an executor calls it between
        the write and the read back, so the record does not wait for the read back)."""
        self._written[order.id] = True
        await self._audit_after(
            WRITTEN,
            order.requested_by,
            **command_details(order),
            approved_by=order.approved_by,
            written_at_ns=written_at_ns,
        )

    # ------------------------------------------------------------------ approvals

    async def approve(
        self, principal: Principal | None, command_id: str, comment: str = ""
    ) -> Command:
        """A second person approves a critical command: then it is written."""
        cmd = await self._pending(principal, command_id, "approve")
        actor = principal.actor if principal is not None else None
        assert principal is not None
        entry = self.catalog.by_path(cmd.tag)
        if entry is not None and entry.config.max_step is not None:
            # The value may have moved while the command waited: the step counts now.
            current = await self._current_value(entry)
            refusal = check_rate(
                entry.config, cmd.value, current=current, last_command_ns=None,
                now_ns=self.clock.now_ns(),
            )  # fmt: skip
            if refusal is not None:
                refused = replace(
                    cmd,
                    state=CommandState.REFUSED,
                    detail=f"at approval: {refusal.detail}",
                    approved_by=actor,
                    comment=comment,
                    updated_at_ns=self.clock.now_ns(),
                    finished_at_ns=self.clock.now_ns(),
                )
                exc = await self._refuse(refusal, actor, id=cmd.id, tag=cmd.tag, op="approve")
                if await asyncio.to_thread(
                    self.store.transition, refused, (CommandState.AWAITING_APPROVAL,)
                ):
                    exc.command = refused
                raise exc
        now = self.clock.now_ns()
        approved = replace(
            cmd,
            state=CommandState.APPROVED,
            approved_by=actor,
            comment=comment,
            updated_at_ns=now,
        )
        await self._conclude(principal, cmd, approved, APPROVED, "approve")
        return await self._execute(approved)

    async def reject(
        self, principal: Principal | None, command_id: str, comment: str = ""
    ) -> Command:
        """A second person rejects a critical command: it is never written."""
        cmd = await self._pending(principal, command_id, "reject")
        assert principal is not None
        now = self.clock.now_ns()
        rejected = replace(
            cmd,
            state=CommandState.REJECTED,
            approved_by=principal.actor,
            comment=comment,
            detail=f"rejected by {principal.actor}",
            updated_at_ns=now,
            finished_at_ns=now,
        )
        await self._conclude(principal, cmd, rejected, REJECTED, "reject")
        self.metrics.inc("commands.rejected")
        return rejected

    async def _pending(self, principal: Principal | None, command_id: str, op: str) -> Command:
        """The command awaiting this principal's decision, or the audited refusal."""
        await self.recover()
        actor = principal.actor if principal is not None else None
        refusal: Refusal | None = None
        if principal is None:
            refusal = Refusal(Reason.AUTHENTICATION, "a valid bearer token is required")
        elif not may_approve(principal.role):
            refusal = Refusal(
                Reason.PERMISSION, f"the role {principal.role} may not approve commands"
            )
        if refusal is not None:
            raise await self._refuse(refusal, actor, id=command_id, op=op)
        cmd = await asyncio.to_thread(self.store.get, command_id)
        if cmd is None:
            refusal = Refusal(Reason.UNKNOWN_COMMAND, f"no command {command_id!r}")
            raise await self._refuse(refusal, actor, id=command_id, op=op)
        refusal = check_approval(principal, cmd, now_ns=self.clock.now_ns())
        if refusal is not None:
            if refusal.reason is Reason.EXPIRED and cmd.state is CommandState.AWAITING_APPROVAL:
                cmd = await self._expire(cmd) or cmd
            shown = cmd if principal is not None and principal.sees(cmd.tag) else None
            raise await self._refuse(
                refusal, actor, command=shown, id=command_id, tag=cmd.tag, op=op
            )
        return cmd

    async def _conclude(
        self, principal: Principal, cmd: Command, decided: Command, action: str, op: str
    ) -> None:
        """Audit an approver's decision (``decided``), then record it unless another
        decision got there first (:class:`CommandRefused`, ``not_awaiting``)."""
        await self._audit(
            action,
            principal.actor,
            **command_details(cmd),
            requested_by=cmd.requested_by,
            comment=decided.comment,
        )
        if not await asyncio.to_thread(
            self.store.transition, decided, (CommandState.AWAITING_APPROVAL,)
        ):
            raise await self._lost_race(principal, cmd, op)

    async def _lost_race(self, principal: Principal, cmd: Command, op: str) -> CommandRefused:
        now_cmd = await asyncio.to_thread(self.store.get, cmd.id) or cmd
        return await self._refuse(
            Refusal(Reason.NOT_AWAITING, f"command {cmd.id} is {now_cmd.state} now"),
            principal.actor,
            command=now_cmd,
            id=cmd.id,
            tag=cmd.tag,
            op=op,
        )

    async def _expire(self, cmd: Command) -> Command | None:
        now = self.clock.now_ns()
        expired = replace(
            cmd,
            state=CommandState.EXPIRED,
            detail=f"not approved within {self.config.approval_timeout:g} s",
            updated_at_ns=now,
            finished_at_ns=now,
        )
        try:
            await self._audit(
                EXPIRED,
                None,
                "expired",
                **command_details(cmd),
                requested_by=cmd.requested_by,
            )
        except CommandRefused:
            return None  # retried at the next tick; an approval is refused meanwhile
        if await asyncio.to_thread(
            self.store.transition, expired, (CommandState.AWAITING_APPROVAL,)
        ):
            self.metrics.inc("commands.expired")
            return expired
        return None

    async def expire_due(self) -> int:
        """Expire every command whose approval time is over; returns how many."""
        now = self.clock.now_ns()
        waiting = await asyncio.to_thread(self.store.in_states, (CommandState.AWAITING_APPROVAL,))
        expired = 0
        for cmd in waiting:
            if is_expired(cmd, now) and await self._expire(cmd) is not None:
                expired += 1
        return expired

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> list[Command]:
        """Once per process, before the first command: ``writing`` rows left by a stop
        become ``uncertain`` (never sent again), ``approved`` ones ``failed``."""
        if self._recovered:
            return []
        self._recovered = True
        changed = await asyncio.to_thread(
            self.store.recover, self.clock.now_ns(), tuple(self._inflight)
        )
        for cmd in changed:
            log.warning("command %s to %s: %s after a restart", cmd.id, cmd.tag, cmd.state)
            await self._audit_after(
                RESULT,
                cmd.requested_by,
                str(cmd.state),
                **command_details(cmd),
                detail=cmd.detail,
                recovered=True,
            )
        return changed

    # ------------------------------------------------------------------ reads

    def _readable(self, principal: Principal | None) -> Principal:
        if principal is None:
            raise CommandRefused(Refusal(Reason.AUTHENTICATION, "a valid bearer token is required"))
        if not (
            principal.can(Resource.COMMANDS, Action.READ)
            or principal.can(Resource.APPROVALS, Action.READ)
        ):
            raise CommandRefused(
                Refusal(Reason.PERMISSION, f"the role {principal.role} may not read commands")
            )
        return principal

    async def get(self, principal: Principal | None, command_id: str) -> Command:
        """One command, if its tag is inside the caller's scopes (else unknown)."""
        who = self._readable(principal)
        cmd = await asyncio.to_thread(self.store.get, command_id)
        if cmd is None or not who.sees(cmd.tag):
            raise CommandRefused(Refusal(Reason.UNKNOWN_COMMAND, f"no command {command_id!r}"))
        return cmd

    async def find(
        self,
        principal: Principal | None,
        *,
        states: Iterable[CommandState] = (),
        tag: str | None = None,
        limit: int = 100,
    ) -> list[Command]:
        """Newest first, only commands to tags inside the caller's scopes."""
        who = self._readable(principal)
        return await asyncio.to_thread(
            lambda: self.store.find(states=tuple(states), tag=tag, scopes=who.scopes, limit=limit)
        )

    async def drain(self, grace: float = 10.0) -> None:
        """Wait for the writes in flight (at shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
