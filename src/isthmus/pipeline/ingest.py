"""The ingest stage: sources emit raw batches here; qualified batches go to transport."""

from __future__ import annotations

import asyncio
import logging

from isthmus.model.batch import Batch
from isthmus.model.clock import Clock
from isthmus.observe.metrics import Metrics
from isthmus.pipeline.qualify import Qualifier
from isthmus.transport.local import LocalTransport

log = logging.getLogger("isthmus.pipeline")


class Ingest:
    def __init__(
        self, qualifier: Qualifier, transport: LocalTransport, metrics: Metrics, clock: Clock
    ) -> None:
        self.qualifier = qualifier
        self.transport = transport
        self.metrics = metrics
        self.clock = clock

    async def emit(self, batch: Batch) -> None:
        """Qualify one raw batch from a source and publish what is to be recorded."""
        self.metrics.inc("pipeline.received_samples", len(batch))
        qualified = self.qualifier.apply(batch)
        self.metrics.set("pipeline.unknown_samples", self.qualifier.unknown_samples)
        self.metrics.set("pipeline.deadband_suppressed", self.qualifier.suppressed_samples)
        await self.transport.publish(qualified)

    async def watch_stale(self, interval: float) -> None:
        """Mark tags whose data stopped arriving; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            stale = self.qualifier.stale(self.clock.now_ns())
            if len(stale):
                self.metrics.inc("pipeline.stale_marked", len(stale))
                log.info("%d tag(s) went stale (no update within stale_after)", len(stale))
                await self.transport.publish(stale)
