"""An asyncio face for the spool: each call runs in a worker thread."""

from __future__ import annotations

import asyncio

from isthmus.model.batch import Batch
from isthmus.transport.spool.spool import Spool, SpoolStats


class AsyncSpool:
    """Wraps a :class:`Spool` so the event loop never blocks on disk I/O or fsync."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    async def append(self, batch: Batch) -> int:
        return await asyncio.to_thread(self.spool.append, batch)

    async def read(self, after_seq: int, max_records: int = 1000) -> list[tuple[int, Batch]]:
        return await asyncio.to_thread(self.spool.read, after_seq, max_records)

    async def ack(self, seq: int) -> None:
        await asyncio.to_thread(self.spool.ack, seq)

    async def sync(self) -> None:
        await asyncio.to_thread(self.spool.sync)

    async def stats(self) -> SpoolStats:
        return await asyncio.to_thread(self.spool.stats)

    async def close(self) -> None:
        await asyncio.to_thread(self.spool.close)
