"""Roles of a process: ``all`` (one process), ``edge`` (publishes to the hub over NATS
JetStream through the spool) and ``hub`` (consumes every site's stream into PostgreSQL).

Commands across sites: the hub's command gate sends every command to the edge of the
tag's site (:class:`~isthmus.security.commands.remote.RemoteExecutor`); the edge receives
them and executes them with its own gate's executor (``CommandReceiver`` +
``EdgeCommandHandler``), and publishes its writable tags' settings for the hub's checks.

The composition root (:mod:`isthmus.app`) builds the same runtime for every role; this
module adds the role's parts to it (:func:`attach_role`) and runs them
(:class:`RoleParts`).  Start: the spool writer subscribes to the pipeline before any
source runs.  Stop (after the sources): the spool writer appends what is queued, then
the publisher persists its last ack; the hub consumer stops before the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from isthmus.model.errors import IsthmusError

if TYPE_CHECKING:
    from isthmus.app import Runtime
    from isthmus.model.catalog import CatalogEntry
    from isthmus.model.config import TagConfig
    from isthmus.pipeline.hub import HubConsumer
    from isthmus.security.commands.remote import RemoteExecutor
    from isthmus.transport.nats.commands import CommandReceiver, CommandSender
    from isthmus.transport.nats.ledger import HubLedger
    from isthmus.transport.nats.publisher import EdgePublisher
    from isthmus.transport.nats.spooler import SpoolWriter
    from isthmus.transport.spool import Spool

log = logging.getLogger("isthmus.roles")

Role = Literal["all", "edge", "hub"]
ROLES: tuple[Role, ...] = ("all", "edge", "hub")
CATALOG_REFRESH_S = 5.0


@dataclass
class RoleParts:
    """The role's parts as one :class:`~isthmus.model.lifecycle.Part`."""

    role: Role
    spool: Spool | None = None
    spool_writer: SpoolWriter | None = None
    publisher: EdgePublisher | None = None
    hub: HubConsumer | None = None
    ledger: HubLedger | None = None
    refresh: Callable[[], Coroutine[Any, Any, None]] | None = None
    """Hub: keeps the API's tag catalog up to date with the tags the sites publish."""
    commands: CommandReceiver | None = None
    """Edge: the hub's orders for this site."""
    sender: CommandSender | None = None
    """Hub: orders to the sites' edges."""
    remote: RemoteExecutor | None = None
    """Hub: the gate's executor (it keeps looking for late answers)."""
    resume: Callable[[], Coroutine[Any, Any, Callable[[], Coroutine[Any, Any, Any]]]] | None = None
    """Hub: at start, before the gate's recovery, takes the orders a previous run had
    sent and returns the task that settles them."""
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"role-{self.role}"

    async def start(self) -> None:
        if self.spool_writer is not None:
            self.tasks.append(asyncio.create_task(self.spool_writer.run(), name="spool-writer"))
        if self.publisher is not None:
            self.tasks.append(asyncio.create_task(self.publisher.run(), name="nats-publisher"))
        if self.hub is not None:
            self.tasks.append(asyncio.create_task(self.hub.run(), name="hub-consumer"))
        if self.refresh is not None:
            self.tasks.append(asyncio.create_task(self.refresh(), name="hub-catalog"))
        if self.commands is not None:
            self.tasks.append(asyncio.create_task(self.commands.run(), name="nats-commands"))
        if self.sender is not None:
            self.tasks.append(asyncio.create_task(self.sender.run(), name="nats-commands"))
        if self.resume is not None:
            settle = await self.resume()
            self.tasks.append(asyncio.create_task(settle(), name="commands-resume"))

    async def stop(self, grace: float = 3.0) -> None:
        names = ("commands-resume", "nats-commands", "spool-writer", "nats-publisher")
        for name in (*names, "hub-consumer", "hub-catalog"):
            if name == "nats-publisher" and self.publisher is not None:
                await self.publisher.drain(grace)
            for task in [t for t in self.tasks if t.get_name() == name]:
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=grace)
                if not done:
                    log.warning("task %s did not stop within %.0f s", name, grace)
                elif not task.cancelled() and task.exception() is not None:
                    log.error("task %s failed: %s", name, task.exception())
        self.tasks.clear()
        if self.remote is not None:
            self.remote.close()
        if self.spool is not None:
            self.spool.close()
        if self.ledger is not None:
            self.ledger.close()

    def health(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        if self.publisher is not None:
            out["nats-publisher"] = self.publisher.connected
        if self.hub is not None:
            out["nats-hub"] = self.hub.connected
        if self.commands is not None:
            out["nats-commands"] = self.commands.connected
        if self.sender is not None:
            out["nats-commands"] = self.sender.connected
        return out


def attach_role(rt: Runtime, role: Role) -> RoleParts:
    """Build the role's parts onto a runtime (before :func:`isthmus.app.start_pipeline`)."""
    parts = RoleParts(role)
    if role == "all":
        rt.role = parts
        return parts
    cfg = rt.plant.transport
    if cfg is None:
        raise IsthmusError(f"--role {role} needs a transport: section (NATS) in the config")
    if role == "edge":
        _attach_edge(rt, parts)
    else:
        _attach_hub(rt, parts)
    rt.role = parts
    return parts


def _attach_edge(rt: Runtime, parts: RoleParts) -> None:
    from isthmus.transport.nats.publisher import EdgePublisher
    from isthmus.transport.nats.spooler import SpoolWriter
    from isthmus.transport.nats.wire import WireTag
    from isthmus.transport.spool import Spool

    cfg = rt.plant.transport
    assert cfg is not None
    directory = Path(cfg.spool.dir)
    if not directory.is_absolute():
        directory = rt.data_dir / directory

    def overflow(samples: int) -> None:
        rt.metrics.inc("edge.spool_overflow_events")
        rt.events.raise_event(
            "spool.overflow",
            "spool",
            "the spool reached its cap: the oldest data is dropped and counted in "
            "spool.dropped_samples until the hub link catches up",
            samples=samples,
        )

    spool = Spool(
        directory,
        max_bytes=cfg.spool.max_bytes,
        max_age_s=cfg.spool.max_age,
        fsync=cfg.spool.fsync,
        metrics=rt.metrics,
        on_overflow=overflow,
    )
    writer = SpoolWriter(
        spool,
        rt.transport,
        rt.metrics,
        flush_interval=cfg.flush_interval,
        batch_samples=cfg.batch_samples,
        queue_batches=rt.plant.pipeline.queue_batches,
    )
    tags = {e.tag_id: WireTag(e.path, e.config.data_type.value, e.config.unit) for e in rt.catalog}
    publisher = EdgePublisher(
        spool,
        cfg,
        rt.plant.site,
        tags,
        rt.metrics,
        rt.clock,
        wake=writer.appended,
        events=rt.events,
    )
    parts.spool, parts.spool_writer, parts.publisher = spool, writer, publisher
    _attach_edge_commands(rt, parts)


def _attach_edge_commands(rt: Runtime, parts: RoleParts) -> None:
    """The hub's orders for this site, executed by this process's gate executor."""
    from isthmus.security.commands.remote import EdgeCommandHandler
    from isthmus.transport.nats.commands import CommandReceiver

    cfg, gate = rt.plant.transport, rt.commands
    if cfg is None or gate is None:
        return
    handler = EdgeCommandHandler(
        gate.executor, gate.store, rt.clock, audit=lambda: gate.audit, hub="hub"
    )
    parts.commands = CommandReceiver(
        cfg,
        rt.plant.site,
        handler,
        rt.metrics,
        rt.clock,
        name=f"{rt.plant.site}-{os.getpid()}",
        duplicate_window=max(rt.plant.commands.approval_timeout, rt.plant.commands.deliver_within),
        events=rt.events,
        tags=lambda: [(e.path, e.config) for e in rt.catalog if e.config.writable],
    )


def _attach_hub(rt: Runtime, parts: RoleParts) -> None:
    from isthmus.pipeline.hub import HubConsumer
    from isthmus.transport.nats.ledger import HubLedger

    cfg = rt.plant.transport
    assert cfg is not None
    if rt.plant.storage.type != "postgres":
        raise IsthmusError("--role hub needs storage: {type: postgres} (the hub's historian)")
    dsn = os.environ.get(rt.plant.storage.dsn_env)
    if not dsn:
        raise IsthmusError(f"--role hub needs the environment variable {rt.plant.storage.dsn_env}")
    name = f"{rt.plant.site}-{os.getpid()}"
    ledger = HubLedger(dsn, name)
    ledger.open()
    parts.ledger = ledger
    parts.hub = HubConsumer(
        cfg, rt.store, ledger, rt.metrics, rt.clock, name=name, events=rt.events
    )
    sender = _attach_hub_commands(rt, parts, name)

    async def refresh() -> None:
        from isthmus.historian.base import TagMeta

        # The writable tags' settings each edge published: the gate checks them.  Kept
        # while NATS cannot be asked (a link down must not make every tag read-only).
        settings: dict[str, TagConfig] = {}
        loaded = False
        while True:
            try:
                if sender.connected:
                    with contextlib.suppress(Exception):
                        fresh: dict[str, TagConfig] = {}
                        for tags in (await sender.site_tags()).values():
                            fresh.update(tags)
                        settings, loaded = fresh, True
                unknown = [
                    TagMeta(path, c.data_type.value, c.unit)
                    for path, c in settings.items()
                    if rt.catalog.by_path(path) is None
                ]
                if unknown:  # commandable before their first sample arrives
                    await asyncio.to_thread(rt.store.register_tags, unknown)
                rows = await asyncio.to_thread(ledger.tag_rows)
                entries = hub_entries(rows, settings)
                added = rt.catalog.extend(entries)
                changed = rt.catalog.update(entries)
                if added or changed:
                    log.info("hub: %d tag(s) added to the catalog, %d changed", added, changed)
            except Exception as exc:  # PostgreSQL away: the next round retries
                log.debug("hub catalog refresh failed: %s", exc)
            # Quickly until the sites' settings came once (a hub that just started).
            await asyncio.sleep(CATALOG_REFRESH_S if loaded else 0.5)

    parts.refresh = refresh


def _attach_hub_commands(rt: Runtime, parts: RoleParts, name: str) -> CommandSender:
    """The hub's gate sends every command to the edge of its tag's site (the hub has no
    sources): its executor becomes a :class:`RemoteExecutor`."""
    from isthmus.security.commands.remote import RemoteExecutor
    from isthmus.transport.nats.commands import CommandSender

    cfg, gate, commands = rt.plant.transport, rt.commands, rt.plant.commands
    assert cfg is not None
    sender = CommandSender(
        cfg,
        rt.metrics,
        rt.clock,
        name=name,
        duplicate_window=max(commands.approval_timeout, commands.deliver_within),
        events=rt.events,
    )
    parts.sender = sender
    if gate is None:
        return sender
    remote = RemoteExecutor(
        sender,
        rt.clock,
        journal=gate.store,
        audit=lambda: gate.audit,
        grace=commands.write_timeout + commands.readback_timeout + 2.0,
    )
    gate.executor = parts.remote = remote

    async def resume() -> Callable[[], Coroutine[Any, Any, Any]]:
        pending = await remote.pending(gate.store)
        if pending:
            log.info("hub: %d command(s) sent before the restart: awaiting results", len(pending))
        return lambda: remote.resume(gate.store, commands.deliver_within, pending)

    parts.resume = resume
    return sender


def hub_entries(
    rows: list[tuple[int, str, str, str]], settings: Mapping[str, TagConfig] | None = None
) -> list[CatalogEntry]:
    """Catalog entries for the historian's tags (full paths enterprise/site/...): the
    hub serves every site's tags without their configs, except the settings the sites
    published for their writable tags (``settings``, by full path)."""
    from isthmus.model.catalog import CatalogEntry
    from isthmus.model.config import DataType, TagConfig

    out = []
    for tag_id, path, data_type, unit in rows:
        parts = path.split("/")
        if len(parts) < 7:
            continue
        try:
            dtype = DataType(data_type)
        except ValueError:
            dtype = DataType.FLOAT64
        published = (settings or {}).get(path)
        if published is not None and published.path == "/".join(parts[2:]):
            out.append(CatalogEntry(tag_id, path, parts[1], published))
            continue
        try:
            cfg = TagConfig(path="/".join(parts[2:]), data_type=dtype, unit=unit)
        except ValueError:
            continue
        out.append(CatalogEntry(tag_id, path, parts[1], cfg))
    return out
