"""The in-process transport: fan-out of batches to bounded subscriber queues.

Each subscriber chooses what happens when its queue is full: ``block`` (the publisher
waits: backpressure, for consumers that must not lose data such as the historian) or
``drop_oldest`` (the oldest batch is discarded and counted, for live views that only
care about now).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from isthmus.model.batch import Batch
from isthmus.model.bus import Policy
from isthmus.observe.metrics import Metrics


class Subscription:
    def __init__(self, transport: LocalTransport, name: str, maxsize: int, policy: Policy):
        self.name = name
        self.policy = policy
        self.dropped_batches = 0
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize)
        self._transport = transport

    async def _offer(self, batch: Batch) -> None:
        if self.policy == "block":
            await self._queue.put(batch)
            return
        while True:
            try:
                self._queue.put_nowait(batch)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self.dropped_batches += 1
                self._transport.metrics.inc(f"transport.{self.name}.dropped_batches")

    async def get(self) -> Batch:
        return await self._queue.get()

    def get_nowait(self) -> Batch | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def merged(self, batches: list[Batch], max_samples: int) -> Batch:
        """``batches`` plus what is queued now, as one batch of about ``max_samples`` at
        most (a batch is never split): consumers write in as few operations as possible."""
        size = sum(len(b) for b in batches)
        while size < max_samples:
            nxt = self.get_nowait()
            if nxt is None:
                break
            batches.append(nxt)
            size += len(nxt)
        return Batch.concat(batches)

    def qsize(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._transport._remove(self)

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Batch]:
        while True:
            yield await self._queue.get()


class LocalTransport:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        self._subs: list[Subscription] = []

    def subscribe(
        self, name: str, maxsize: int = 256, policy: Policy = "drop_oldest"
    ) -> Subscription:
        sub = Subscription(self, name, maxsize, policy)
        self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    async def publish(self, batch: Batch) -> None:
        if len(batch) == 0:
            return
        self.metrics.inc("transport.published_samples", len(batch))
        for sub in list(self._subs):
            await sub._offer(batch)
