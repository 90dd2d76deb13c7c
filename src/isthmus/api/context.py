"""What the API needs from the running system, built by the composition root."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from isthmus import __version__
from isthmus.historian.base import Store
from isthmus.model.catalog import TagCatalog
from isthmus.model.clock import Clock
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import Metrics
from isthmus.security.audit import AuditLog
from isthmus.security.commands import CommandGate
from isthmus.security.identity import Identity
from isthmus.transport.local import LocalTransport

SAMPLES_WRITTEN_METRIC = "historian.samples_written"
"""The counter ``/health`` reports as ``samples_written``."""


def _no_sources() -> dict[str, bool]:
    return {}


def _no_labels() -> Mapping[int, Mapping[int, str]]:
    return {}


@dataclass
class ApiContext:
    """Shared, long-lived parts the routers use.  The store is synchronous: routers call
    it through ``asyncio.to_thread``."""

    catalog: TagCatalog
    store: Store
    transport: LocalTransport
    metrics: Metrics
    clock: Clock
    identity: Identity
    started_ns: int = 0
    """Process start (UTC ns); 0 means "when this context was built"."""
    version: str = __version__
    source_status: Callable[[], dict[str, bool]] = field(default=_no_sources)
    """Connected or not, per source name."""
    samples_written_metric: str = SAMPLES_WRITTEN_METRIC
    events: EventLog = field(default_factory=EventLog)
    enum_labels: Callable[[], Mapping[int, Mapping[int, str]]] = field(default=_no_labels)
    """Enumeration labels the sources read from their devices, per tag id."""
    audit: AuditLog | None = None
    """The tamper-evident audit log (None: this server keeps none; /api/audit says 503)."""
    commands: CommandGate | None = None
    """The command gate (None: this server sends no commands; /api/commands says 503)."""

    def __post_init__(self) -> None:
        if self.started_ns == 0:
            self.started_ns = self.clock.now_ns()
