"""The edge's acknowledgement point: outbound batches, merged, appended to the spool.

It subscribes to the pipeline's transport with the ``block`` policy (a slow disk slows
the pipeline down, it never loses data), merges batches for ``flush_interval`` up to
``batch_samples`` per record, and appends each record to the spool from a worker thread.
With ``fsync: always`` a sample counts as accepted by the edge once that append returns.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from isthmus.model.batch import Batch
from isthmus.observe.metrics import BurstLog, Metrics
from isthmus.transport.local import LocalTransport
from isthmus.transport.spool import Spool

log = logging.getLogger("isthmus.transport.spool")


def chunks(batch: Batch, size: int) -> list[Batch]:
    """``batch`` cut into pieces of at most ``size`` rows, in order."""
    n = len(batch)
    if n <= size:
        return [batch]
    return [batch.select(np.arange(i, min(i + size, n), dtype=np.intp)) for i in range(0, n, size)]


class SpoolWriter:
    def __init__(
        self,
        spool: Spool,
        transport: LocalTransport,
        metrics: Metrics,
        *,
        flush_interval: float,
        batch_samples: int,
        queue_batches: int = 256,
    ) -> None:
        self.spool = spool
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.batch_samples = batch_samples
        self.appended = asyncio.Event()
        """Set after each append: wakes the publisher."""
        self._sub = transport.subscribe("spool", maxsize=queue_batches, policy="block")
        self._burst = BurstLog(log)

    async def run(self) -> None:
        """Append until cancelled; on cancellation spool what is queued, then stop."""
        try:
            while True:
                first = await self._sub.get()
                if self.flush_interval > 0:
                    await asyncio.sleep(self.flush_interval)
                await self._append(self._drain([first]))
        except asyncio.CancelledError:
            pending = self._drain([])
            if len(pending):
                await asyncio.shield(self._append(pending))
            raise
        finally:
            self._sub.close()

    def _drain(self, batches: list[Batch]) -> Batch:
        return self._sub.merged(batches, self.batch_samples * 8)

    async def _append(self, batch: Batch) -> None:
        if not len(batch):
            return
        for piece in chunks(batch, self.batch_samples):
            while True:
                try:
                    await asyncio.to_thread(self.spool.append, piece)
                    break
                except OSError as exc:  # disk full, I/O error: retry, never drop silently
                    self.metrics.inc("spool.append_errors")
                    self._burst.warning("append", "spool append failed, retrying: %s", exc)
                    await asyncio.sleep(1.0)
            self.appended.set()
