"""Publishing the Unified Namespace (UNS) to an MQTT broker.

Every tag's latest value and quality goes to its ISA-95 topic
``[prefix/]enterprise/site/area/line/cell/equipment/tag`` as JSON
``{"value": 21.5, "quality": "Good", "timestamp": "2026-01-01T00:00:00.000000Z"}``,
retained by default, so a new subscriber sees the whole plant at once.

Bounded everywhere: the publisher reads the local transport through a ``drop_oldest``
subscription (dropped batches are counted as ``transport.uns.dropped_batches``), keeps at
most one pending value per tag (newer values replace older ones: ``uns.coalesced``) and
publishes each changed tag at most once per ``min_interval``.  While the broker is away
the pending values wait (still one per tag); after a reconnect every tag's latest value
is published again, so a broker that lost its retained messages gets them back.
Replayed (historical) batches are not published: the UNS shows the present.

Metrics: ``uns.published``, ``uns.coalesced``, ``uns.errors``, ``uns.reconnects``,
gauge ``uns.pending``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import aiomqtt
import numpy as np

from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import DataType, UnsConfig
from isthmus.model.quality import quality_name
from isthmus.model.values import typed_value
from isthmus.net.backoff import Backoff
from isthmus.net.mqtt import SetupError, make_client
from isthmus.observe.metrics import Metrics
from isthmus.transport.local import LocalTransport

log = logging.getLogger("isthmus.uns")

Sample = tuple[int, float | str, int]
"""(ts ns, value, quality); the value of a string sample is its text"""

PUBLISH_CHUNK = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_timestamp(ts_ns: int) -> str:
    moment = _EPOCH + timedelta(microseconds=ts_ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def payload(value: float | str, quality: int, ts_ns: int, kind: DataType) -> bytes:
    """The JSON document of one tag's sample (NaN becomes ``null``; a string sample's
    value is its text)."""
    text = value if isinstance(value, str) else None
    number = float("nan") if isinstance(value, str) else value
    doc = {
        "value": typed_value(number, kind, text),
        "quality": quality_name(quality),
        "timestamp": iso_timestamp(ts_ns),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class UnsPublisher:
    """Subscribes to the local transport and publishes the UNS; runs until cancelled."""

    name = "uns"

    def __init__(
        self,
        config: UnsConfig,
        catalog: TagCatalog,
        transport: LocalTransport,
        metrics: Metrics,
        *,
        client_id: str,
        queue_batches: int = 256,
    ) -> None:
        self.config = config
        self._transport = transport
        self._metrics = metrics
        self._client_id = config.client_id or client_id
        self._queue_batches = queue_batches
        prefix = f"{config.prefix}/" if config.prefix else ""
        self._prefix = prefix
        self.topics: dict[int, str] = {}
        self._kinds: dict[int, DataType] = {}
        self._add(catalog)
        catalog.subscribe(self._add)  # tags created at run time are published too
        self._latest: dict[int, Sample] = {}
        self._pending: dict[int, Sample] = {}
        self._wake = asyncio.Event()
        self.connected = False

    def _add(self, entries: Iterable[CatalogEntry]) -> None:
        for e in entries:
            self.topics[e.tag_id] = self._prefix + e.path
            self._kinds[e.tag_id] = e.config.value_type

    # ---------------------------------------------------------------- coalescing

    def offer(self, batch: Batch) -> None:
        """Keep the newest sample of each tag of ``batch`` (public for tests)."""
        if batch.historical or len(batch) == 0:
            return
        reversed_ids = batch.tag_id[::-1]
        tags, first = np.unique(reversed_ids, return_index=True)
        rows = len(batch) - 1 - first
        coalesced = len(batch) - len(tags)
        ts, values, qualities, texts = batch.ts, batch.value, batch.quality, batch.text
        for tag, row in zip(tags.tolist(), rows.tolist(), strict=True):
            if tag not in self.topics:
                continue
            text = None if texts is None else texts[row]
            value = float(values[row]) if text is None else str(text)
            sample = (int(ts[row]), value, int(qualities[row]))
            if tag in self._pending:
                coalesced += 1
            self._pending[tag] = sample
            self._latest[tag] = sample
        if coalesced:
            self._metrics.inc("uns.coalesced", coalesced)
        self._metrics.set("uns.pending", len(self._pending))
        self._wake.set()

    def latest(self, tag_id: int) -> Sample | None:
        return self._latest.get(tag_id)

    async def _consume(self) -> None:
        sub = self._transport.subscribe("uns", self._queue_batches, "drop_oldest")
        try:
            async for batch in sub:
                self.offer(batch)
        finally:
            sub.close()

    # ---------------------------------------------------------------- publishing

    async def _publish_pending(self, client: aiomqtt.Client) -> None:
        if not self._pending:
            return
        snapshot, self._pending = self._pending, {}
        items = list(snapshot.items())
        cfg = self.config
        try:
            for start in range(0, len(items), PUBLISH_CHUNK):
                chunk = items[start : start + PUBLISH_CHUNK]
                await asyncio.gather(
                    *(
                        client.publish(
                            self.topics[tag],
                            payload(value, quality, ts, self._kinds[tag]),
                            qos=cfg.qos,
                            retain=cfg.retain,
                            timeout=cfg.timeout,
                        )
                        for tag, (ts, value, quality) in chunk
                    )
                )
                self._metrics.inc("uns.published", len(chunk))
        except BaseException:
            # Not lost: whatever was not superseded meanwhile is published after reconnect.
            for tag, sample in snapshot.items():
                self._pending.setdefault(tag, sample)
            raise
        finally:
            self._metrics.set("uns.pending", len(self._pending))

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        interval = max(self.config.min_interval, 0.005)
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            started = loop.time()
            await self._publish_pending(client)
            # One publish per tag per interval: sleep the rest of it, then wait for data.
            rest = interval - (loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)
            if not self._pending:
                await self._wake.wait()

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Returns or raises when the connection drops, even while nothing is published
        (the publisher subscribes to nothing, so no message ever arrives)."""
        async for _ in client.messages:
            pass

    async def _serve(self, client: aiomqtt.Client) -> None:
        watcher = asyncio.create_task(self._watch(client))
        publisher = asyncio.create_task(self._publish_loop(client))
        try:
            done, _ = await asyncio.wait({watcher, publisher}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise aiomqtt.MqttError("disconnected")
        finally:
            for task in (watcher, publisher):
                task.cancel()
            await asyncio.gather(watcher, publisher, return_exceptions=True)

    async def run(self) -> None:
        cfg = self.config
        consumer = asyncio.create_task(self._consume(), name="uns-consume")
        backoff = Backoff(cap=cfg.reconnect_max)
        target = f"{cfg.host}:{cfg.port}"
        down_since: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with make_client(
                        cfg,
                        self._client_id,
                        max_inflight=PUBLISH_CHUNK,
                    ) as client:
                        self.connected = True
                        backoff.reset()
                        if down_since is not None:
                            self._metrics.inc("uns.reconnects")
                            log.info(
                                "UNS: connected again to %s after %.1f s",
                                target,
                                loop.time() - down_since,
                            )
                            down_since = None
                            # The broker may have lost retained messages: send the state.
                            for tag, sample in self._latest.items():
                                self._pending.setdefault(tag, sample)
                        await self._serve(client)
                except (aiomqtt.MqttError, SetupError, TimeoutError) as exc:
                    self.connected = False
                    self._metrics.inc("uns.errors")
                    if down_since is None:
                        down_since = loop.time()
                        log.warning(
                            "UNS: broker %s unreachable (%s); values wait, reconnecting",
                            target,
                            exc,
                        )
                await asyncio.sleep(backoff.next_delay())
        finally:
            self.connected = False
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
