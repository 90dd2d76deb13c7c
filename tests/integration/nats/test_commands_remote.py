"""The hub's gate commanding an edge's device over a real nats-server: RemoteExecutor →
CommandSender → JetStream → CommandReceiver → EdgeCommandHandler → LocalExecutor, real
command stores and audit logs on both ends, an in-memory device that counts writes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.clock import SystemClock
from isthmus.model.config import CommandsConfig, Criticality, TagConfig, TransportConfig
from isthmus.observe.metrics import Metrics
from isthmus.security.audit import AuditLog, iter_records
from isthmus.security.commands import (
    Command,
    CommandGate,
    CommandState,
    CommandStore,
    LocalExecutor,
)
from isthmus.security.commands.model import CommandOrder, Value
from isthmus.security.commands.remote import (
    NO_RESULT,
    EdgeCommandHandler,
    RemoteExecutor,
    site_of,
)
from isthmus.security.rbac import Principal, Role
from isthmus.transport.nats.commands import CommandReceiver, CommandSender
from tests.integration.nats.nats_server import NatsServer
from tests.support import running_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ADMIN = Principal("alice", Role.ADMIN)
_sites = itertools.count()


@dataclass
class Device:
    """A Commander over an in-memory register map that counts what it applied."""

    name: str = "plc"
    values: dict[str, Value] = field(default_factory=dict)
    applied: list[tuple[str, Value]] = field(default_factory=list)

    async def write(self, tag: str | int, value: Value) -> None:
        self.values[str(tag)] = value
        self.applied.append((str(tag), value))

    async def read_back(self, tag: str | int, timeout: float) -> Value | None:  # noqa: ASYNC109
        return self.values.get(str(tag))


@dataclass
class Edge:
    site: str
    path: str
    device: Device
    store: CommandStore
    audit: AuditLog
    handler: EdgeCommandHandler
    catalog: TagCatalog


def edge_parts(tmp: Path, site: str, limits: tuple[float, float] = (10, 90)) -> Edge:
    path = f"acme/{site}/utilities/line1/cell1/pump1/speed_sp"
    cfg = TagConfig(
        path="utilities/line1/cell1/pump1/speed_sp",
        range=(0, 100),
        write_limits=limits,
        writable=True,
        criticality=Criticality.MEDIUM,
    )
    catalog = TagCatalog([CatalogEntry(1, path, "plc", cfg)])
    device = Device()
    store = CommandStore.open(tmp / "edge")
    audit = AuditLog(tmp / "edge")
    executor = LocalExecutor(
        catalog, {"plc": device}.get, store, SystemClock(), write_timeout=1, readback_timeout=1
    )
    handler = EdgeCommandHandler(executor, store, SystemClock(), audit=lambda: audit)
    return Edge(site, path, device, store, audit, handler, catalog)


def transport(server: NatsServer) -> TransportConfig:
    return TransportConfig.model_validate(
        {"servers": [server.url], "ack_wait": 1.0, "ack_timeout": 2.0}
    )


@contextlib.asynccontextmanager
async def edge_running(cfg: TransportConfig, edge: Edge) -> AsyncIterator[CommandReceiver]:
    receiver = CommandReceiver(
        cfg,
        edge.site,
        edge.handler,
        Metrics(),
        SystemClock(),
        tags=lambda: [(e.path, e.config) for e in edge.catalog if e.config.writable],
    )
    async with running_task(receiver.run, lambda: receiver.connected, 10.0, "receiver"):
        yield receiver


@contextlib.asynccontextmanager
async def sender_running(cfg: TransportConfig) -> AsyncIterator[CommandSender]:
    sender = CommandSender(cfg, Metrics(), SystemClock(), lookup_interval=0.3)
    async with running_task(sender.run, lambda: sender.connected, 10.0, "sender"):
        yield sender


def actions(data_dir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    return [(r["action"], r["outcome"], r["details"]) for r in iter_records(data_dir)]


async def hub_catalog(sender: CommandSender, site: str, within: float = 10.0) -> TagCatalog:
    """The hub's catalog from the settings the edge published."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        tags = (await sender.site_tags()).get(site)
        if tags:
            return TagCatalog(CatalogEntry(i + 1, p, site, c) for i, (p, c) in enumerate(tags))
        await asyncio.sleep(0.1)
    raise AssertionError("the edge's tag settings never arrived")


async def test_hub_gate_commands_the_edge_device_both_audit(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    cfg, site = transport(nats_server), f"rsite{next(_sites)}"
    edge = edge_parts(tmp_path, site)
    hub_store = CommandStore.open(tmp_path / "hub")
    hub_audit = AuditLog(tmp_path / "hub")
    async with sender_running(cfg) as sender, edge_running(cfg, edge):
        catalog = await hub_catalog(sender, site)
        entry = catalog.by_path(edge.path)
        assert entry is not None and entry.config.writable
        assert entry.config.write_limits == (10, 90)  # the edge's settings, not defaults
        remote = RemoteExecutor(sender, SystemClock(), journal=hub_store, audit=lambda: hub_audit)
        gate = CommandGate(catalog, hub_store, remote, hub_audit, SystemClock(), CommandsConfig())
        done = await gate.submit(ADMIN, edge.path, 42.0, "raise the flow", "r-1")
        again = await gate.submit(ADMIN, edge.path, 42.0, "raise the flow", "r-1")  # retry
        # The hub's copy of the settings is stale (looser than the edge's): the edge,
        # which checks again, refuses; nothing is written.
        loose = entry.config.model_copy(update={"write_limits": (0.0, 100.0)})
        catalog.update([CatalogEntry(entry.tag_id, entry.path, site, loose)])
        refused = await gate.submit(ADMIN, edge.path, 95.0, "too far", "r-2")
    assert done.state is CommandState.VERIFIED and done.read_back == 42.0
    assert again.state is CommandState.VERIFIED
    assert refused.state is CommandState.REFUSED and "95" in refused.detail
    assert edge.device.applied == [(edge.path, 42.0)]
    hub = actions(tmp_path / "hub")
    assert ("command.forwarded", "ok") in [(a, o) for a, o, _ in hub]
    assert ("command.result", "verified") in [(a, o) for a, o, _ in hub]
    edge_log = actions(tmp_path / "edge")
    assert [(a, o) for a, o, d in edge_log if d.get("id") == "r-1"] == [
        ("command.received", "ok"),
        ("command.result", "verified"),
    ]
    assert ("command.result", "refused") in [(a, o) for a, o, _ in edge_log]
    assert all(d.get("via") == "hub" for a, _, d in edge_log if a.startswith("command."))


def order(edge: Edge, cid: str, value: float, ttl: float) -> dict[str, Any]:
    return {
        "id": cid,
        "site": edge.site,
        "tag": edge.path,
        "value": value,
        "requested_by": "alice",
        "approved_by": None,
        "expires_at_ns": time.time_ns() + int(ttl * 1e9),
    }


async def test_edge_handler_stored_result_first_then_expiry_then_audit(tmp_path: Path) -> None:
    edge = edge_parts(tmp_path, "lyon")
    first = await edge.handler(order(edge, "h-1", 20.0, ttl=0.3))
    await asyncio.sleep(0.4)
    # Redelivered after its expiry (the edge died before its answer left): what it did.
    late_copy = await edge.handler(order(edge, "h-1", 20.0, ttl=-1.0))
    assert first["state"] == late_copy["state"] == "verified"
    expired = await edge.handler(order(edge, "h-2", 30.0, ttl=-2.0))
    assert expired["state"] == "expired" and expired["refusal"] == "expired"
    assert "after its expiry" in expired["detail"]
    stored = edge.store.get("h-2")
    assert stored is not None and stored.state is CommandState.EXPIRED
    assert (await edge.handler(order(edge, "h-2", 30.0, ttl=60)))["state"] == "expired"
    # No audit log: fail closed.
    closed = EdgeCommandHandler(
        edge.handler.executor, edge.store, SystemClock(), audit=lambda: None
    )
    refused = await closed(order(edge, "h-3", 40.0, ttl=60))
    assert refused["state"] == "refused" and refused["refusal"] == "audit_unavailable"
    assert edge.device.applied == [(edge.path, 20.0)]


async def test_uncertain_is_settled_by_the_late_answer_and_a_restarted_hub_resumes(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    cfg, site = transport(nats_server), f"rsite{next(_sites)}"
    edge = edge_parts(tmp_path, site)
    store = CommandStore.open(tmp_path / "hub")
    clock = SystemClock()
    path = edge.path

    def accepted(cid: str, value: float) -> CommandOrder:
        now = clock.now_ns()
        cmd = Command(cid, path, value, "r", "alice", "admin", CommandState.APPROVED, now, now)
        assert store.insert(cmd) is None
        return cmd.order()

    async with sender_running(cfg) as sender:
        remote = RemoteExecutor(sender, clock, journal=store, grace=0.2)
        # No edge: no answer by the expiry → uncertain (never success).
        lone = await remote.execute(
            replace(accepted("u-1", 11.0), expires_at_ns=clock.now_ns() + 500_000_000)
        )
        assert lone.state is CommandState.UNCERTAIN and lone.detail.startswith(NO_RESULT)
        # A hub "killed" while waiting: its row stays writing.
        waiting = asyncio.create_task(
            remote.execute(
                replace(accepted("u-2", 12.0), expires_at_ns=clock.now_ns() + 20 * 10**9)
            )
        )
        await asyncio.sleep(0.3)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        remote.close()
        row = store.get("u-2")
        assert row is not None and row.state is CommandState.WRITING
        # The restarted hub: takes what it must settle, then the edge comes back.
        restarted = RemoteExecutor(sender, clock, journal=store, grace=0.5)
        pending = await restarted.pending(store)
        assert {c.id for c in pending} == {"u-1", "u-2"}
        resumed = asyncio.create_task(restarted.resume(store, 20.0, pending))
        async with edge_running(cfg, edge):
            settled = await asyncio.wait_for(resumed, 20)
            for _ in range(100):  # u-1: the edge's late answer (expired) replaces uncertain
                u1 = store.get("u-1")
                if u1 is not None and u1.state is not CommandState.UNCERTAIN:
                    break
                await asyncio.sleep(0.1)
        restarted.close()
    assert [c.id for c in settled] == ["u-2"]
    u2 = store.get("u-2")
    assert u2 is not None and u2.state is CommandState.VERIFIED
    assert u1 is not None and u1.state is CommandState.EXPIRED
    assert edge.device.applied == [(path, 12.0)]
    assert site_of(path) == site


def test_hub_catalog_takes_the_published_settings_and_follows_their_changes() -> None:
    from isthmus.roles import hub_entries

    rows = [(7, "acme/lyon/utilities/line1/cell1/pump1/speed_sp", "float64", "%")]
    published = TagConfig(
        path="utilities/line1/cell1/pump1/speed_sp",
        unit="%",
        writable=True,
        criticality=Criticality.CRITICAL,
        write_limits=(10, 90),
    )
    (plain,) = hub_entries(rows)
    assert not plain.config.writable  # nothing published: read-only on the hub
    catalog = TagCatalog([plain])
    (entry,) = hub_entries(rows, {rows[0][1]: published})
    assert catalog.extend([entry]) == 0  # known path and id: not added again...
    assert catalog.update([entry]) == 1  # ...but its settings follow the edge's
    got = catalog.by_path(rows[0][1])
    assert got is not None and got.config.criticality is Criticality.CRITICAL
    assert catalog.update([entry]) == 0
    assert catalog.update([CatalogEntry(8, entry.path, "lyon", published)]) == 0  # other id
    # A setting published for another path is not taken.
    wrong = published.model_copy(update={"path": "utilities/line1/cell1/pump1/other"})
    assert not hub_entries(rows, {rows[0][1]: wrong})[0].config.writable
