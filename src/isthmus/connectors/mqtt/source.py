"""MQTT source: subscribes to topic templates, maps payload fields onto tags, and emits
one batch per ``batch_interval`` or ``batch_max`` values (never one per message).

Qualities produced:

* Good — the field was read (or the quality the payload's quality field gives);
* ``BAD_DECODING_ERROR`` — the payload of a topic that maps onto the tag could not be
  decoded (not JSON, field missing, not a number, bad timestamp/quality; for a string
  tag: an object, array or null, or a plain payload that is not UTF-8).

String tags (``data_type: string``) get text samples (see
:mod:`~isthmus.connectors.mqtt.mapping`); a batch carries a text column only when one
of its rows is text.
* ``BAD_COMMUNICATION_ERROR`` — the broker is unreachable (once per outage, via ``Link``).

Metrics (``source.<name>.*``): ``messages``, ``values``, ``rejected`` (one per value or
message that could not be decoded), ``unknown_tags`` (a topic produced a tag path that
is not configured), ``unmatched``, ``dropped`` (incoming queue full),
``refused_subscriptions`` (ACL), ``errors``, ``reconnects``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import aiomqtt
import numpy as np

from isthmus.connectors.base import (
    BoundTag,
    CommandWriteError,
    Link,
    SourceContext,
    Value,
    tag_index,
)
from isthmus.connectors.mqtt.command import render
from isthmus.connectors.mqtt.config import MqttSourceConfig, MqttTagConfig
from isthmus.connectors.mqtt.mapping import (
    FieldMap,
    JsonPath,
    TopicTemplate,
    decode_message,
    fill,
    parse_path,
    parse_topic,
)
from isthmus.connectors.readback import ReadBacks
from isthmus.model.batch import Batch
from isthmus.model.config import DataType
from isthmus.net.link import LinkLost
from isthmus.net.mqtt import make_client

RESOLVE_CACHE_MAX = 4096
SUBACK_FAILURE = 0x80


@dataclass(frozen=True, slots=True)
class _Sub:
    template: TopicTemplate
    qos: int
    values: tuple[tuple[JsonPath, str], ...]
    timestamp: JsonPath | None
    quality: JsonPath | None


@dataclass(frozen=True, slots=True)
class _Route:
    index: int
    sub: _Sub
    fields: tuple[FieldMap, ...]
    unknown: int
    """Fields whose tag path is not configured."""


class MqttSource:
    def __init__(
        self,
        config: MqttSourceConfig,
        tags: Sequence[BoundTag[MqttTagConfig]],
        ctx: SourceContext,
    ) -> None:
        self.name = config.name
        self.config = config
        self._ctx = ctx
        self._by_path = {t.config.path: t.tag_id for t in tags}
        self._index = tag_index(tags)
        self._client: aiomqtt.Client | None = None
        self._read_backs = ReadBacks()
        self._text_ids = {t.tag_id for t in tags if t.config.data_type is DataType.STRING}
        self._subs = [
            _Sub(
                parse_topic(s.topic),
                s.qos,
                tuple((parse_path(v.field), v.tag) for v in s.values),
                parse_path(s.timestamp) if s.timestamp else None,
                parse_path(s.quality) if s.quality else None,
            )
            for s in config.subscriptions
        ]
        self._cache: dict[str, list[_Route]] = {}
        self._burst = ctx.burst_log(self.name)
        ids = np.array([t.tag_id for t in tags], dtype=np.int32)
        self._link = Link("MQTT", config.name, f"{config.host}:{config.port}", ids, ctx)
        self._tag_ids: list[int] = []
        self._values: list[float] = []
        self._qualities: list[int] = []
        self._ts: list[int] = []
        self._texts: list[tuple[int, str]] = []  # (row in the pending batch, text)
        m = f"source.{config.name}."
        self._m_messages = m + "messages"
        self._m_values = m + "values"
        self._m_rejected = m + "rejected"
        self._m_unknown = m + "unknown_tags"
        self._m_unmatched = m + "unmatched"
        self._m_dropped = m + "dropped"
        self._m_writes = m + "writes"
        self._m_write_errors = m + "write_errors"

    @property
    def connected(self) -> bool:
        return self._link.connected

    # ------------------------------------------------------------------ decoding

    def _routes(self, topic: str) -> list[_Route]:
        """Which subscriptions a topic matches and the tags its fields go to (cached)."""
        hit = self._cache.get(topic)
        if hit is not None:
            return hit
        routes: list[_Route] = []
        for index, sub in enumerate(self._subs):
            variables = sub.template.match(topic)
            if variables is None:
                continue
            fields: list[FieldMap] = []
            unknown = 0
            for path, template in sub.values:
                tag_path = fill(template, variables)
                tag_id = self._by_path.get(tag_path) if tag_path is not None else None
                if tag_id is None:
                    unknown += 1
                fields.append(FieldMap(path, tag_id, text=tag_id in self._text_ids))
            routes.append(_Route(index, sub, tuple(fields), unknown))
        if len(self._cache) >= RESOLVE_CACHE_MAX:
            self._cache.clear()
        self._cache[topic] = routes
        return routes

    def handle(self, topic: str, payload: bytes) -> None:
        """Decode one message into the pending batch (public for tests and benchmarks)."""
        metrics = self._ctx.metrics
        metrics.inc(self._m_messages)
        routes = self._routes(topic)
        if not routes:
            metrics.inc(self._m_unmatched)
            return
        now = self._ctx.clock.now_ns()
        for route in routes:
            if route.unknown:
                metrics.inc(self._m_unknown, route.unknown)
                self._burst.warning(
                    f"unknown:{route.index}",
                    "MQTT source %s: topic %s maps onto tags that are not configured "
                    "(declare them under tags:)",
                    self.name,
                    topic,
                )
            sub = route.sub
            decoded = decode_message(payload, route.fields, now, sub.timestamp, sub.quality)
            if decoded.rejections:
                metrics.inc(self._m_rejected, len(decoded.rejections))
                self._burst.warning(
                    f"rejected:{route.index}",
                    "MQTT source %s: rejected payload on %s: %s",
                    self.name,
                    topic,
                    decoded.rejections[0],
                )
            if decoded.tag_ids:
                if self._read_backs:
                    self._deliver(decoded.tag_ids, decoded.values, decoded.qualities, decoded.texts)
                if decoded.texts:
                    offset = len(self._tag_ids)
                    self._texts.extend((offset + row, text) for row, text in decoded.texts)
                self._tag_ids.extend(decoded.tag_ids)
                self._values.extend(decoded.values)
                self._qualities.extend(decoded.qualities)
                self._ts.extend(decoded.ts)

    def _deliver(
        self,
        tag_ids: Sequence[int],
        values: Sequence[float],
        qualities: Sequence[int],
        texts: Sequence[tuple[int, str]],
    ) -> None:
        """Hand the first value received for an awaited tag to its read back (Bad
        samples do not count: they say the value could not be read)."""
        text_of = dict(texts)
        for row, tag_id in enumerate(tag_ids):
            if not qualities[row] & 0x80000000:
                self._read_backs.deliver(tag_id, text_of.get(row, values[row]))

    # ------------------------------------------------------------------ commands

    async def write(self, tag: str | int, value: Value) -> None:
        """Publish a command to a writable tag (id, UNS path or tag map path): its
        ``command`` topic and payload templates filled with the raw value; with QoS 1
        the write returns once the broker acknowledged it (PUBACK).  Never retried.

        Raises :class:`~isthmus.connectors.base.CommandWriteError`: ``failed`` when
        nothing was published (unknown, non-writable tag or one without ``command``, a
        value that does not fit, not connected, the client refused the message);
        ``uncertain`` when it was handed to the broker connection but no PUBACK came
        within ``timeout`` (it may have reached the device)."""
        bound = self._index.get(tag)
        if bound is None:
            raise CommandWriteError(f"MQTT source {self.name}: no tag {tag!r}")
        cfg = bound.config
        command = cfg.command
        if not cfg.writable or command is None:
            raise CommandWriteError(f"{cfg.path}: not writable (set writable: true and command:)")
        try:
            message = render(
                command.topic, command.payload, cfg, value, self._ctx.clock.now_ns() // 1_000_000
            )
        except ValueError as exc:
            raise CommandWriteError(f"{cfg.path}: {exc}") from None
        client = self._client
        if client is None or not self._link.connected:
            self._ctx.metrics.inc(self._m_write_errors)
            raise CommandWriteError(f"{cfg.path}: MQTT source {self.name} is not connected")
        self._read_backs.arm(bound.tag_id, cfg)  # before publishing: a fast echo counts
        try:
            await client.publish(
                message.topic,
                message.payload.encode(),
                qos=command.qos,
                retain=command.retain,
                timeout=self.config.timeout,
            )
        except aiomqtt.MqttCodeError as exc:  # refused by the client before sending
            self._read_backs.disarm(bound.tag_id)
            self._ctx.metrics.inc(self._m_write_errors)
            raise CommandWriteError(
                f"{cfg.path}: not published to {message.topic}: {exc}"
            ) from None
        except aiomqtt.MqttError as exc:
            self._ctx.metrics.inc(self._m_write_errors)
            raise CommandWriteError(
                f"{cfg.path}: published to {message.topic} but not acknowledged within "
                f"{self.config.timeout:g} s ({exc}): it may have reached the device",
                "uncertain",
            ) from None
        self._ctx.metrics.inc(self._m_writes)
        self._ctx.log.info(
            "MQTT source %s: command %s = %r published to %s",
            self.name,
            cfg.path,
            value,
            message.topic,
        )

    async def read_back(self, tag: str | int, timeout: float) -> Value | None:  # noqa: ASYNC109
        """The next value of the tag received on its subscribed topics after the last
        command to it was published (or, without a command, after this call), waited
        for at most ``timeout`` seconds; ``None`` if none came (MQTT has no read
        request: the device must publish its value)."""
        bound = self._index.get(tag)
        if bound is None:
            return None
        return await self._read_backs.next_value(bound.tag_id, bound.config, timeout)

    @property
    def pending(self) -> int:
        return len(self._tag_ids)

    def take_batch(self) -> Batch | None:
        if not self._tag_ids:
            return None
        text = None
        if self._texts:
            text = np.full(len(self._tag_ids), None, dtype=object)
            for row, item in self._texts:
                text[row] = item
            self._texts = []
        batch = Batch(
            np.array(self._tag_ids, dtype=np.int32),
            np.array(self._ts, dtype=np.int64),
            np.array(self._values, dtype=np.float64),
            np.array(self._qualities, dtype=np.uint32),
            text=text,
        )
        self._tag_ids, self._values, self._qualities, self._ts = [], [], [], []
        return batch

    async def _flush(self) -> None:
        batch = self.take_batch()
        if batch is not None:
            self._ctx.metrics.inc(self._m_values, len(batch))
            await self._ctx.emit(batch)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.batch_interval)
            await self._flush()

    # ---------------------------------------------------------------- connection

    def _on_drop(self) -> None:
        self._ctx.metrics.inc(self._m_dropped)
        self._burst.warning(
            "dropped", "MQTT source %s: incoming queue full, oldest messages dropped", self.name
        )

    def _check_granted(self, sub: _Sub, granted: object) -> None:
        """A broker refuses a subscription (an ACL) with the SUBACK code 0x80: say so."""
        codes = granted if isinstance(granted, list | tuple) else [granted]
        if any(getattr(code, "value", code) == SUBACK_FAILURE for code in codes):
            self._ctx.metrics.inc(f"source.{self.name}.refused_subscriptions")
            self._burst.warning(
                f"refused:{sub.template.text}",
                "MQTT source %s: the broker refused the subscription to %s "
                "(check the ACL of user %s)",
                self.name,
                sub.template.subscription,
                self.config.username or "(anonymous)",
            )

    async def run(self) -> None:
        """Consume until cancelled; reconnects with capped backoff; never raises otherwise."""
        await self._link.supervise(
            self._session,
            errors=(aiomqtt.MqttError,),
            close=lambda: None,  # the client context closes the connection
            reconnect_max=self.config.reconnect_max,
        )

    async def _session(self) -> None:
        cfg = self.config
        client = make_client(
            cfg,
            cfg.client_id or f"isthmus-{cfg.name}",
            clean_session=cfg.clean_session,
            max_queued_incoming=cfg.max_queued_messages,
            on_drop=self._on_drop,
        )
        try:
            async with client:
                self._client = client
                for sub in self._subs:
                    granted = await client.subscribe(sub.template.subscription, qos=sub.qos)
                    self._check_granted(sub, granted)
                self._link.up()
                flusher = asyncio.create_task(self._flush_loop())
                try:
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            payload = b"" if payload is None else str(payload).encode()
                        self.handle(message.topic.value, bytes(payload))
                        if len(self._tag_ids) >= cfg.batch_max:
                            await self._flush()
                finally:
                    flusher.cancel()
                    await asyncio.gather(flusher, return_exceptions=True)
        finally:
            self._client = None
            await self._flush()  # what arrived before the link broke is emitted first
        raise LinkLost("disconnected")
