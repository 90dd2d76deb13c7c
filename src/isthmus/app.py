"""Composition root: builds the running system from a validated configuration.

Nothing else wires components together.  Registries are built here explicitly.
Start order: store → catalog → pipeline → sources → API; stop order is the reverse
of data flow: sources first, then the stale watch, then the historian writer (which
flushes what is queued), then the API, then the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isthmus import __version__
from isthmus.connectors.base import BoundTag, ConnectorSpec, DeclareTags, Source, SourceContext
from isthmus.connectors.registry import default_connectors
from isthmus.historian.base import Maintainable, Store, StoreFactory, TagMeta
from isthmus.historian.maintenance import start_maintenance
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.clock import Clock, SystemClock
from isthmus.model.config import PlantConfig, SourceConfig, TagConfig
from isthmus.model.errors import IsthmusError
from isthmus.model.lifecycle import Part, PartGroup, TaskPart, start_parts, stop_parts
from isthmus.model.registry import Registry
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import Metrics
from isthmus.pipeline.ingest import Ingest
from isthmus.pipeline.qualify import Qualifier
from isthmus.pipeline.writer import HistorianWriter
from isthmus.transport.local import LocalTransport

if TYPE_CHECKING:
    from isthmus.api.context import ApiContext
    from isthmus.connectors.sparkplug.edge import SparkplugEdge
    from isthmus.historian.maintenance import HistorianMaintenance
    from isthmus.historian.scheduled_export import ScheduledExport
    from isthmus.security.commands import CommandGate
    from isthmus.security.tls import TlsFiles
    from isthmus.transport.mqtt import UnsPublisher

log = logging.getLogger("isthmus")

SERVER_FILE = "server.json"
CLI_TOKEN_FILE = "cli-token"
EVENTS_FILE = "events.jsonl"
EVENT_TICK_S = 5.0
CLI_TOKEN_TTL_S = 365 * 86400.0
"""The local CLI token is rewritten at every start; whoever can read it can read the
signing key beside it too, so a long life adds no exposure."""


def full_path(plant: PlantConfig, tag: TagConfig) -> str:
    return f"{plant.uns_prefix()}/{tag.path}"


@dataclass
class Runtime:
    """The running system's parts; what the API and the CLI see."""

    plant: PlantConfig
    source_configs: list[SourceConfig]
    data_dir: Path
    catalog: TagCatalog
    store: Store
    transport: LocalTransport
    metrics: Metrics
    clock: Clock
    ingest: Ingest
    writer: HistorianWriter
    sources: list[Source]
    started_ns: int
    version: str = __version__
    uns: UnsPublisher | None = None
    """Publishes the Unified Namespace when the plant config has a ``uns:`` section."""
    sparkplug_edge: SparkplugEdge | None = None
    """Publishes every tag as a Sparkplug B edge node (``sparkplug_edge:`` section)."""
    scheduled_export: ScheduledExport | None = None
    """The daily export to the data lake (``export:`` section)."""
    maintenance: HistorianMaintenance | None = None
    """Rollups into the downsampling tiers and retention per tag class."""
    events: EventLog = field(default_factory=EventLog)
    """Rejected frames, outages, overflows: once per burst, also in DATA_DIR/events.jsonl."""
    role: Part | None = None
    """The edge or hub parts added by :func:`isthmus.roles.attach_role` (``--role``)."""
    capabilities: list[Part] = field(default_factory=list)
    """Long-running parts of capabilities (commands, alarms...), started after the
    live-data consumers and before the sources."""
    commands: CommandGate | None = None
    """The command gate (its part is in ``capabilities``); the API attaches the audit log."""
    parts: list[Part] = field(default_factory=list)
    """What :func:`start_pipeline` started, in start order."""

    def enum_labels(self) -> dict[int, Mapping[int, str]]:
        """Enumeration labels read from devices (OPC UA EnumStrings/EnumValues)."""
        out: dict[int, Mapping[int, str]] = {}
        for source in self.sources:
            out.update(getattr(source, "enum_labels", None) or {})
        return out

    def source_status(self) -> dict[str, bool]:
        status = {s.name: s.connected for s in self.sources}
        if self.role is not None:
            status.update(self.role.health())
        return status


def default_stores() -> Registry[StoreFactory]:
    from isthmus.historian.registry import default_stores as stores

    return stores()


def build_runtime(
    plant: PlantConfig,
    source_configs: Sequence[SourceConfig],
    data_dir: Path,
    *,
    connectors: Registry[ConnectorSpec] | None = None,
    stores: Registry[StoreFactory] | None = None,
    clock: Clock | None = None,
) -> Runtime:
    connectors = connectors or default_connectors()
    stores = stores or default_stores()
    clock = clock or SystemClock()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)

    store = stores.get(plant.storage.type)(plant.storage, data_dir)
    store.open()
    enabled = [s for s in source_configs if s.enabled]
    metas = [
        TagMeta(full_path(plant, t), t.data_type.value, t.unit) for s in enabled for t in s.tags
    ]
    ids = store.register_tags(metas)
    entries = [
        CatalogEntry(ids[full_path(plant, t)], full_path(plant, t), s.name, t)
        for s in enabled
        for t in s.tags
    ]
    catalog = TagCatalog(entries)
    metrics = Metrics()
    events = EventLog(path=data_dir / EVENTS_FILE, clock=clock)
    transport = LocalTransport(metrics)
    qualifier = Qualifier(catalog)
    ingest = Ingest(qualifier, transport, metrics, clock)
    writer = HistorianWriter(
        store,
        transport,
        metrics,
        clock,
        flush_interval=plant.pipeline.flush_interval,
        queue_batches=plant.pipeline.queue_batches,
        # A store with its own maintenance keeps retention per tag class; the writer's
        # hourly purge (one horizon for all) is for the others.
        retention_s=None
        if isinstance(store, Maintainable)
        else plant.storage.retention.default.raw,
        events=events,
    )
    sources: list[Source] = []
    for cfg in enabled:
        bound: list[BoundTag[TagConfig]] = [
            BoundTag(ids[full_path(plant, t)], full_path(plant, t), t) for t in cfg.tags
        ]
        ctx = SourceContext(
            emit=ingest.emit,
            clock=clock,
            metrics=metrics,
            log=logging.getLogger(f"isthmus.source.{cfg.name}"),
            data_dir=data_dir,
            events=events,
            declare_tags=tag_declarer(plant, store, catalog, qualifier, cfg.name),
        )
        sources.append(connectors.get(cfg.type).factory(cfg, bound, ctx))
    uns: UnsPublisher | None = None
    if plant.uns is not None:
        from isthmus.transport.mqtt import UnsPublisher

        uns = UnsPublisher(
            plant.uns,
            catalog,
            transport,
            metrics,
            client_id=f"isthmus-uns-{plant.enterprise}-{plant.site}",
            queue_batches=plant.pipeline.queue_batches,
        )
    sparkplug_edge: SparkplugEdge | None = None
    if plant.sparkplug_edge is not None:
        from isthmus.connectors.sparkplug.edge import SparkplugEdge

        sparkplug_edge = SparkplugEdge(
            plant.sparkplug_edge, catalog, transport, metrics, clock, state_dir=data_dir
        )
    maintenance = start_maintenance(
        store, ((e.tag_id, e.config) for e in catalog), clock, metrics=metrics, events=events
    )
    scheduled_export: ScheduledExport | None = None
    if plant.export is not None:
        from isthmus.historian.scheduled_export import ScheduledExport

        units = {full_path(plant, t): t.unit for s in enabled for t in s.tags}
        scheduled_export = ScheduledExport(
            plant.export, store, data_dir, clock, metrics, events, units
        )
    from isthmus.security.commands import build_gate

    gate, gate_part = build_gate(
        plant.commands, catalog, sources, store, data_dir, clock, events=events, metrics=metrics
    )
    return Runtime(
        plant=plant,
        source_configs=list(source_configs),
        data_dir=data_dir,
        catalog=catalog,
        store=store,
        transport=transport,
        metrics=metrics,
        clock=clock,
        ingest=ingest,
        writer=writer,
        sources=sources,
        started_ns=clock.now_ns(),
        uns=uns,
        sparkplug_edge=sparkplug_edge,
        scheduled_export=scheduled_export,
        maintenance=maintenance,
        events=events,
        capabilities=[gate_part],
        commands=gate,
    )


def tag_declarer(
    plant: PlantConfig, store: Store, catalog: TagCatalog, qualifier: Qualifier, source: str
) -> DeclareTags:
    """What a source calls to create the tags it discovers at run time: registered in
    the historian (stable ids), qualified, then added to the catalog (API, hierarchy,
    UNS and Sparkplug edge follow).  A path another source already owns is not given."""

    def declare(configs: Sequence[TagConfig]) -> dict[str, int]:
        metas = [TagMeta(full_path(plant, t), t.data_type.value, t.unit) for t in configs]
        ids = store.register_tags(metas)
        given: dict[str, int] = {}
        fresh: list[CatalogEntry] = []
        for t in configs:
            path = full_path(plant, t)
            known = catalog.by_path(path)
            if known is None:
                fresh.append(CatalogEntry(ids[path], path, source, t))
            elif known.source != source:
                continue
            given[t.path] = ids[path]
        qualifier.add(fresh)
        catalog.extend(fresh)
        if fresh:
            log.info("source %s created %d tag(s), e.g. %s", source, len(fresh), fresh[0].path)
        return given

    return declare


def pipeline_parts(rt: Runtime) -> list[Part]:
    """The running system as a list of parts in start order (stopped in reverse): the
    role's parts (the edge's spool writer subscribes before any source emits, and stops
    after the historian writer), the historian writer, the housekeeping, the live-data
    consumers, the capabilities, then the sources."""
    parts: list[Part] = []
    if rt.role is not None:
        parts.append(rt.role)
    stale = rt.plant.pipeline.stale_check_interval
    parts += [
        TaskPart("historian-writer", rt.writer.run),
        TaskPart("stale-watch", lambda: rt.ingest.watch_stale(stale)),
        TaskPart("event-tick", lambda: _event_tick(rt.events)),
    ]
    if rt.maintenance is not None:
        parts.append(TaskPart("historian-maintenance", rt.maintenance.run))
    if rt.scheduled_export is not None:
        parts.append(TaskPart("scheduled-export", rt.scheduled_export.run))
    if rt.uns is not None:
        # Before the sources: it subscribes to the transport when its task first runs.
        parts.append(TaskPart("uns-publisher", rt.uns.run))
    if rt.sparkplug_edge is not None:
        parts.append(TaskPart("sparkplug-edge", rt.sparkplug_edge.run))
    parts += rt.capabilities
    sources: list[Part] = [TaskPart(f"source-{s.name}", s.run) for s in rt.sources]
    parts.append(PartGroup("sources", sources))
    return parts


async def start_pipeline(rt: Runtime) -> None:
    """Start every part of the running system (see :func:`pipeline_parts`)."""
    rt.parts = pipeline_parts(rt)
    await start_parts(rt.parts)


async def stop_pipeline(rt: Runtime, grace: float = 3.0) -> None:
    """Stop the parts in reverse order (sources first, the historian writer flushes what
    is queued, the role's parts last), then close the store."""
    await stop_parts(rt.parts, grace)
    rt.parts = []
    rt.events.tick(force=True)
    rt.store.close()


async def _event_tick(events: EventLog) -> None:
    """Report the tails of finished bursts (see BurstLog.flush)."""
    while True:
        await asyncio.sleep(EVENT_TICK_S)
        events.tick()


class _Server:
    """uvicorn without its own signal handling: the CLI owns signals."""

    def __init__(self, app: Any, host: str, port: int, tls: TlsFiles | None = None) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                yield

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            ssl_certfile=str(tls.certfile) if tls else None,
            ssl_keyfile=str(tls.keyfile) if tls else None,
            ssl_keyfile_password=tls.password if tls else None,
        )
        self.server = Quiet(config)

    async def serve(self) -> None:
        await self.server.serve()

    @property
    def started(self) -> bool:
        return bool(self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True


async def serve(
    rt: Runtime,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run pipeline, sources and the API until ``stop`` is set, then shut down in order."""
    from isthmus.api.app import create_app

    app = create_app(api_context(rt))
    tls = None
    if rt.plant.api.tls is not None:  # checked now: never start on an unusable certificate
        from isthmus.security.tls import resolve

        tls = resolve(rt.plant.api.tls, rt.data_dir, host, rt.clock)
    server = _Server(app, host, port, tls)
    await start_pipeline(rt)
    server_task = asyncio.create_task(server.serve(), name="api")
    try:
        while not server.started:
            if server_task.done():
                exc = server_task.exception() if not server_task.cancelled() else None
                raise IsthmusError(f"the API could not listen on {host}:{port}: {exc}")
            await asyncio.sleep(0.05)
        # Everything alive now (modules, app, config) lives as long as the process: out of
        # the collector's sight, so a full collection on the data path does not walk it
        # (tens of milliseconds with every module loaded: a latency spike).
        gc.freeze()
        url = f"{'https' if tls else 'http'}://{host}:{port}"
        _write_server_file(rt.data_dir, url, tls.certfile if tls and tls.self_signed else None)
        if on_ready:
            on_ready(url)
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({stop_wait, server_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
    finally:
        # The API goes first: clients are told (WebSockets closed with 1012) and no request
        # can reach a store that is closing.  Then the pipeline, in data-flow order.
        (rt.data_dir / SERVER_FILE).unlink(missing_ok=True)
        server.stop()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, SystemExit):
            await asyncio.wait_for(server_task, timeout=1.5)
        await stop_pipeline(rt)


def api_context(rt: Runtime) -> ApiContext:
    """What the API sees of the runtime; also leaves the local CLI token (mode 0600)."""
    from isthmus.api.context import ApiContext
    from isthmus.security.audit import CONFIG_LOADED, AuditLog
    from isthmus.security.identity import Identity, IdentitySettings, write_private

    # Verified whole on opening: a tampered log stops the start (file, line, reason).
    audit = AuditLog(rt.data_dir, clock=rt.clock, events=rt.events)
    audit.append(
        CONFIG_LOADED,
        actor=None,
        enterprise=rt.plant.uns_prefix(),
        sources=len(rt.source_configs),
        tags=sum(len(s.tags) for s in rt.source_configs),
        sha256=hashlib.sha256(
            "\n".join(
                [rt.plant.model_dump_json()] + [s.model_dump_json() for s in rt.source_configs]
            ).encode()
        ).hexdigest(),
    )
    if rt.commands is not None:
        rt.commands.audit = audit  # the gate refuses every command until it has one
    # A corrupt users file stops the start here (file, line, field).
    settings = IdentitySettings.from_config(rt.plant.api, mfa_issuer=f"Isthmus {rt.plant.site}")
    identity = Identity.open(rt.data_dir, clock=rt.clock, settings=settings, audit=audit)
    identity.warn_admins_without_mfa()
    # The local CLI token: a viewer API token for `isthmus query`, re-issued every start.
    token = identity.issue_local_token(CLI_TOKEN_TTL_S)
    write_private(rt.data_dir / CLI_TOKEN_FILE, token.encode())
    return ApiContext(
        catalog=rt.catalog,
        store=rt.store,
        transport=rt.transport,
        metrics=rt.metrics,
        clock=rt.clock,
        identity=identity,
        started_ns=rt.started_ns,
        version=rt.version,
        source_status=rt.source_status,
        events=rt.events,
        enum_labels=rt.enum_labels,
        audit=audit,
        commands=rt.commands,
    )


def _write_server_file(data_dir: Path, url: str, cafile: Path | None = None) -> None:
    """``cafile``: the self-signed certificate a local client verifies the server with."""
    path = data_dir / SERVER_FILE
    info: dict[str, Any] = {"url": url, "pid": os.getpid()}
    if cafile is not None:
        info["cafile"] = str(cafile.resolve())
    path.write_text(json.dumps(info))
    os.chmod(path, 0o600)


def running_server(data_dir: Path) -> str | None:
    """The URL of the server that holds ``data_dir``, if one is running."""
    path = data_dir / SERVER_FILE
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
        return str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
