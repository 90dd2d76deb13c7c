"""Publishing our own tags as a Sparkplug B 3.0 edge node.

Each equipment of the catalog is a device (id ``area:line:cell:equipment``), each tag a
metric named after its last path segment, with its tag id as the alias.  Per MQTT
session: the will is an NDEATH carrying ``bdSeq``; NBIRTH (seq 0, metrics ``bdSeq`` and
``Node Control/Rebirth``) and then one DBIRTH per device (all its metrics with the latest
values, names, aliases and datatypes) are published before any DDATA; DDATA carries
aliases, no names (and the datatype unless ``data_datatype`` is false).  ``seq`` counts
every message after NBIRTH modulo 256.  An NCMD
``Node Control/Rebirth`` = true republishes NBIRTH and every DBIRTH (same ``bdSeq``);
any other metric of an NCMD is refused and counted (``sparkplug_edge.commands_refused``):
a write to a machine goes through the command gate only, never through our edge node.

Values come from the local transport through a bounded ``drop_oldest`` subscription
(``transport.sparkplug-edge.dropped_batches`` counts what was dropped).  A sample with
a quality other than Good carries a ``Quality`` property (UInt32, the OPC UA status
code); a non-finite value is sent as ``is_null``.  Historical batches are published
with ``is_historical`` set.  A string tag is a String metric (datatype 12) carrying
the sample's text (``is_null`` for a sample without text).  Metrics:
``sparkplug_edge.published``, ``.births``, ``.rebirths``, ``.commands_refused``,
``.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import aiomqtt
import numpy as np

from isthmus.connectors.sparkplug.codec import (
    BDSEQ_METRIC,
    BOOLEAN,
    DATATYPE_OF,
    DOUBLE,
    FLOAT,
    INT64,
    REBIRTH_METRIC,
    STRING,
    DecodeError,
    OutMetric,
    decode,
    encode,
    metric_value,
    topic,
)
from isthmus.connectors.sparkplug.config import SparkplugEdgeConfig
from isthmus.model.batch import Batch
from isthmus.model.bus import Bus, Feed
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.clock import Clock, SystemClock
from isthmus.net.backoff import Backoff
from isthmus.net.mqtt import SetupError, make_client
from isthmus.observe.metrics import Metrics

log = logging.getLogger("isthmus.sparkplug.edge")


@dataclass(frozen=True, slots=True)
class _EdgeTag:
    tag_id: int
    device: str
    name: str
    datatype: int
    unit: str = ""


def device_id(path: str) -> str:
    """``area/line/cell/equipment`` → ``area:line:cell:equipment``."""
    return path.replace("/", ":")


class SparkplugEdge:
    """Runs until cancelled (``run``) or between ``start()`` and ``stop()``."""

    def __init__(
        self,
        config: SparkplugEdgeConfig,
        catalog: TagCatalog,
        transport: Bus,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.config = config
        self._transport = transport
        self._metrics = metrics or Metrics()
        self._clock = clock or SystemClock()
        self._tags: dict[int, _EdgeTag] = {}
        self.devices: dict[str, list[int]] = {}
        self._add(catalog)
        self._births_due = False
        catalog.subscribe(self._on_new_tags)
        self._latest: dict[int, tuple[int, float | str | None, int]] = {}
        """tag id → (ts, value, quality) of its last live sample; the value is the
        text (or None) for a string tag."""
        self._seq = 0
        self._bd_seq_file = (
            state_dir / f"sparkplug-edge-{config.group}-{config.edge_node}.bdseq"
            if state_dir is not None
            else None
        )
        self.bd_seq = self._load_bd_seq()
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()
        self._sub: Feed | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    def _add(self, entries: Iterable[CatalogEntry]) -> None:
        for entry in entries:
            parts = entry.path.split("/")
            dev = device_id("/".join(parts[-5:-1]))
            datatype = DATATYPE_OF[entry.config.value_type]
            self._tags[entry.tag_id] = _EdgeTag(
                entry.tag_id, dev, parts[-1], datatype, entry.config.unit
            )
            self.devices.setdefault(dev, []).append(entry.tag_id)

    def _on_new_tags(self, entries: Sequence[CatalogEntry]) -> None:
        """Tags created at run time: a metric must be born before its data, so the next
        batch is preceded by births (NBIRTH and every DBIRTH, as on a rebirth)."""
        self._add(entries)
        self._births_due = True

    # ------------------------------------------------------------------ API

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="sparkplug-edge")

    async def stop(self) -> None:
        """Publish NDEATH, disconnect, stop consuming."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _load_bd_seq(self) -> int:
        """The last session's bdSeq (each session uses the next one); without a state
        directory, a value from the clock (a restart then most likely differs)."""
        if self._bd_seq_file is not None:
            try:
                return int(self._bd_seq_file.read_text().strip()) % 256
            except (OSError, ValueError):
                return 255  # first session: bdSeq 0
        return self._clock.now_ns() // 1_000_000_000 % 256

    def _next_bd_seq(self) -> int:
        """Advance and persist bdSeq before the session's will is registered, so a host
        never sees the same bdSeq for two sessions, even across restarts."""
        self.bd_seq = (self.bd_seq + 1) % 256
        if self._bd_seq_file is not None:
            tmp = self._bd_seq_file.with_suffix(".tmp")
            try:
                tmp.write_text(str(self.bd_seq))
                os.replace(tmp, self._bd_seq_file)
            except OSError as exc:
                log.warning("Sparkplug edge: cannot persist bdSeq in %s: %s", tmp, exc)
        return self.bd_seq

    # ------------------------------------------------------------------ payloads

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        return seq

    def _now_ms(self) -> int:
        return self._clock.now_ns() // 1_000_000

    def _out(self, tag: _EdgeTag, birth: bool, historical: bool = False) -> OutMetric:
        sample = self._latest.get(tag.tag_id)
        unit = tag.unit if birth else None
        if sample is None:
            return OutMetric(tag.name, tag.tag_id, tag.datatype, None, unit=unit)
        ts, value, quality = sample
        out_value = _wire_value(value, tag.datatype)
        return OutMetric(
            tag.name if birth else None,
            tag.tag_id,
            tag.datatype,
            out_value,
            timestamp_ms=ts // 1_000_000,
            quality=quality if quality != 0 else None,
            is_historical=historical,
            send_datatype=birth,
            unit=unit,
        )

    def ndeath_payload(self) -> bytes:
        return encode(
            [OutMetric(BDSEQ_METRIC, None, INT64, self.bd_seq)],
            seq=None,
            timestamp_ms=self._now_ms(),
        )

    async def _publish(
        self, client: aiomqtt.Client, kind: str, device: str | None, data: bytes
    ) -> None:
        await client.publish(
            topic(self.config.group, kind, self.config.edge_node, device),
            data,
            qos=self.config.qos,
        )
        self._metrics.inc("sparkplug_edge.published")

    async def _births(self, client: aiomqtt.Client) -> None:
        async with self._lock:
            self._births_due = False
            await self._births_unlocked(client)

    async def _births_unlocked(self, client: aiomqtt.Client) -> None:
        self._seq = 0
        nbirth = [
            OutMetric(BDSEQ_METRIC, None, INT64, self.bd_seq),
            OutMetric(REBIRTH_METRIC, None, BOOLEAN, False),
        ]
        now = self._now_ms()
        await self._publish(
            client, "NBIRTH", None, encode(nbirth, seq=self._next_seq(), timestamp_ms=now)
        )
        for dev, ids in self.devices.items():
            metrics = [self._out(self._tags[i], birth=True) for i in ids]
            data = encode(metrics, seq=self._next_seq(), timestamp_ms=now)
            await self._publish(client, "DBIRTH", dev, data)
        self._metrics.inc("sparkplug_edge.births")

    async def publish_batch(self, batch: Batch) -> None:
        """Remember the batch's values; while connected publish one DDATA per device."""
        rows: dict[str, list[int]] = {}
        for tag_id, ts, value, quality, text in zip(
            batch.tag_id.tolist(),
            batch.ts.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            repeat(None, len(batch)) if batch.text is None else batch.texts(),
            strict=True,
        ):
            tag = self._tags.get(tag_id)
            if tag is None:
                continue
            if not batch.historical:
                sample = text if tag.datatype == STRING else value
                self._latest[tag_id] = (ts, sample, quality)
            rows.setdefault(tag.device, []).append(tag_id)
        client = self._client
        if client is None or not rows:
            return
        async with self._lock:
            if self._births_due:
                self._births_due = False
                await self._births_unlocked(client)
            for dev, ids in rows.items():
                data = encode(
                    self._rows(batch, ids), seq=self._next_seq(), timestamp_ms=self._now_ms()
                )
                await self._publish(client, "DDATA", dev, data)

    def _rows(self, batch: Batch, ids: list[int]) -> list[OutMetric]:
        """Every sample of ``ids`` in the batch, alias only, in batch order."""
        out = []
        text = batch.text
        for k in np.flatnonzero(np.isin(batch.tag_id, ids)).tolist():
            tag = self._tags[int(batch.tag_id[k])]
            sample = None if text is None else text[k]
            if tag.datatype != STRING:
                sample = float(batch.value[k])
            out.append(
                OutMetric(
                    None,
                    tag.tag_id,
                    tag.datatype,
                    _wire_value(sample, tag.datatype),
                    timestamp_ms=int(batch.ts[k]) // 1_000_000,
                    quality=int(batch.quality[k]) or None,
                    is_historical=batch.historical,
                    send_datatype=self.config.data_datatype,
                )
            )
        return out

    # ------------------------------------------------------------------ I/O

    async def _consume(self) -> None:
        sub = self._transport.subscribe("sparkplug-edge", self.config.queue_batches, "drop_oldest")
        self._sub = sub
        try:
            async for batch in sub:
                try:
                    await self.publish_batch(batch)
                except aiomqtt.MqttError:
                    self._metrics.inc("sparkplug_edge.errors")
        finally:
            sub.close()

    async def _on_command(self, client: aiomqtt.Client, data: bytes) -> None:
        try:
            payload = decode(data)
        except DecodeError:
            return
        rebirth = metric_value(payload.metrics, REBIRTH_METRIC)
        if rebirth is not None and rebirth.raw is True:
            self._metrics.inc("sparkplug_edge.rebirths")
            log.info("Sparkplug edge %s: rebirth requested", self.config.edge_node)
            await self._births(client)
        # Anything else would be a write to a machine from outside the command gate.
        refused = sum(1 for m in payload.metrics if m.name != REBIRTH_METRIC)
        if refused:
            self._metrics.inc("sparkplug_edge.commands_refused", refused)
            log.warning(
                "Sparkplug edge %s: NCMD with %d metric(s) other than a rebirth refused "
                "(commands reach machines through the command gate only)",
                self.config.edge_node,
                refused,
            )

    async def run(self) -> None:
        cfg = self.config
        consumer = asyncio.create_task(self._consume(), name="sparkplug-edge-consume")
        backoff = Backoff(cap=cfg.reconnect_max)
        client_id = cfg.client_id or f"isthmus-edge-{cfg.edge_node}"
        try:
            while True:
                try:
                    self._next_bd_seq()
                    death_topic = topic(cfg.group, "NDEATH", cfg.edge_node)
                    # Sparkplug 3.0: the NDEATH will is QoS 1 and not retained.
                    death = aiomqtt.Will(death_topic, self.ndeath_payload(), qos=1, retain=False)
                    client = make_client(cfg, client_id, clean_session=True, will=death)
                    async with client:
                        await client.subscribe(topic(cfg.group, "NCMD", cfg.edge_node), qos=1)
                        await self._births(client)
                        self._client = client
                        self.connected = True
                        backoff.reset()
                        try:
                            async for message in client.messages:
                                data = message.payload
                                if isinstance(data, bytes | bytearray):
                                    await self._on_command(client, bytes(data))
                        except asyncio.CancelledError:
                            self._client = None
                            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                                await asyncio.wait_for(
                                    client.publish(death_topic, self.ndeath_payload(), qos=1),
                                    timeout=1.0,
                                )
                            raise
                except (aiomqtt.MqttError, SetupError) as exc:
                    self._metrics.inc("sparkplug_edge.errors")
                    log.warning("Sparkplug edge %s: broker: %s", cfg.edge_node, exc)
                self._client = None
                self.connected = False
                await asyncio.sleep(backoff.next_delay())
        finally:
            self._client = None
            self.connected = False
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)


def _wire_value(value: float | str | None, datatype: int) -> float | bool | int | str | None:
    if datatype == STRING:
        return value if isinstance(value, str) else None
    if value is None or isinstance(value, str) or not math.isfinite(value):
        return None
    if datatype == BOOLEAN:
        return value != 0.0
    if datatype in (FLOAT, DOUBLE):
        return value
    return int(value)
