"""The command gate: the only way anything reaches a machine (see ``docs/commands.md``).

* :mod:`.model` — commands, states, refusal reasons, the order/result pair;
* :mod:`.policy` — the pure gate steps, in order;
* :mod:`.store` — ``DATA_DIR/commands.db`` (persisted before the write);
* :mod:`.executor` — write exactly once, read back, compare;
* :mod:`.gate` — the steps, approvals, idempotency and the audit records together;
* :mod:`.part` — recovery at start and approval expiry on the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from isthmus.connectors.base import Commander
from isthmus.historian.base import Store
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.clock import Clock
from isthmus.model.config import CommandsConfig
from isthmus.model.quality import is_good
from isthmus.model.values import typed_value
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import Metrics
from isthmus.security.commands.executor import CommandExecutor, LocalExecutor
from isthmus.security.commands.gate import Auditor, CommandGate, CurrentValue
from isthmus.security.commands.model import (
    Command,
    CommandOrder,
    CommandRefused,
    CommandResult,
    CommandState,
    Reason,
    Refusal,
    Value,
)
from isthmus.security.commands.part import CommandsPart
from isthmus.security.commands.store import CommandStore

__all__ = [
    "Auditor",
    "Command",
    "CommandExecutor",
    "CommandGate",
    "CommandOrder",
    "CommandRefused",
    "CommandResult",
    "CommandState",
    "CommandStore",
    "Commander",
    "CommandsPart",
    "LocalExecutor",
    "Reason",
    "Refusal",
    "Value",
    "build_gate",
    "historian_current",
]


def historian_current(store: Store) -> CurrentValue:
    """The tag's newest Good sample in the historian, as its typed value."""

    def current(entry: CatalogEntry) -> tuple[Value, int] | None:
        batch = store.last([entry.tag_id])
        if len(batch) == 0 or not bool(is_good(batch.quality[:1])[0]):
            return None
        value = typed_value(float(batch.value[0]), entry.config.value_type, batch.texts()[0])
        return None if value is None else (value, int(batch.ts[0]))

    return current


def build_gate(
    config: CommandsConfig,
    catalog: TagCatalog,
    sources: Sequence[object],
    historian: Store,
    data_dir: Path,
    clock: Clock,
    *,
    audit: Auditor | None = None,
    events: EventLog | None = None,
    metrics: Metrics | None = None,
) -> tuple[CommandGate, CommandsPart]:
    """The gate of an all-in-one or edge process: commands persisted in
    ``data_dir/commands.db``, written through this process's sources.  ``audit`` may be
    attached later (``gate.audit = ...``); until then every command is refused."""
    store = CommandStore.open(data_dir)
    commanders: dict[str, Commander] = {}
    for source in sources:
        if isinstance(source, Commander):
            commanders[source.name] = source
    executor = LocalExecutor(
        catalog,
        commanders.get,
        store,
        clock,
        write_timeout=config.write_timeout,
        readback_timeout=config.readback_timeout,
    )
    gate = CommandGate(
        catalog,
        store,
        executor,
        audit,
        clock,
        config,
        current=historian_current(historian),
        events=events,
        metrics=metrics,
    )
    executor.on_written = gate.record_written
    executor.on_result = gate.record_result
    return gate, CommandsPart(gate)
