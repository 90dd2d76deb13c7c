"""The historian writer: drains the transport into the store in batches.

It subscribes with ``block`` policy, so a slow store slows the pipeline down instead of
losing data.  Batches are merged for ``flush_interval`` and written from a worker
thread.  A failing store is retried with backoff; nothing is dropped while it retries.
"""

from __future__ import annotations

import asyncio
import logging
import time

from isthmus.historian.base import Store
from isthmus.model.batch import Batch
from isthmus.model.clock import Clock
from isthmus.net.backoff import Backoff
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import BurstLog, Metrics
from isthmus.transport.local import LocalTransport

log = logging.getLogger("isthmus.historian")

MAX_MERGE = 500_000  # samples written at once at most


class HistorianWriter:
    def __init__(
        self,
        store: Store,
        transport: LocalTransport,
        metrics: Metrics,
        clock: Clock,
        *,
        flush_interval: float = 0.25,
        queue_batches: int = 256,
        retention_s: float | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.flush_interval = flush_interval
        self.retention_s = retention_s
        self._sub = transport.subscribe("historian", maxsize=queue_batches, policy="block")
        self._burst = BurstLog(log, events=events, source="historian", prefix="historian")
        self._last_purge = 0.0

    async def run(self) -> None:
        """Write until cancelled; on cancellation flush what is queued, then stop."""
        try:
            while True:
                first = await self._sub.get()
                await asyncio.sleep(self.flush_interval)
                await self._write(self._drain([first]))
                await self._maybe_purge()
        except asyncio.CancelledError:
            pending = self._drain([])
            if len(pending):
                await asyncio.shield(self._write(pending, attempts=3))
            raise
        finally:
            self._sub.close()

    def _drain(self, batches: list[Batch]) -> Batch:
        return self._sub.merged(batches, MAX_MERGE)

    async def _write(self, batch: Batch, attempts: int | None = None) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        tries = 0
        while True:
            tries += 1
            try:
                start = time.perf_counter()
                written = await asyncio.to_thread(self.store.write, batch)
                self.metrics.inc("historian.samples_written", written)
                self.metrics.inc("historian.duplicates_skipped", len(batch) - written)
                self.metrics.set("historian.last_write_ms", (time.perf_counter() - start) * 1e3)
                return
            except Exception as exc:  # the store's own errors, whatever the backend
                self.metrics.inc("historian.write_errors")
                self._burst.warning("write", "historian write failed, retrying: %s", exc)
                if attempts is not None and tries >= attempts:
                    log.error("historian write abandoned after %d attempts", tries)
                    self.metrics.inc("historian.samples_lost", len(batch))
                    return
                await asyncio.sleep(backoff.next_delay())

    async def _maybe_purge(self) -> None:
        if not self.retention_s:
            return
        now = time.monotonic()
        if now - self._last_purge < 3600:
            return
        self._last_purge = now
        cutoff = self.clock.now_ns() - int(self.retention_s * 1e9)
        deleted = await asyncio.to_thread(self.store.purge_before, cutoff)
        if deleted:
            log.info("retention: deleted %d samples", deleted)
