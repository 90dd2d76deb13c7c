"""Sparkplug B host application: a Source (``type: sparkplug``).

Subscribes ``spBv1.0/<group>/#`` for each configured group, runs every message through
the pure :class:`~isthmus.connectors.sparkplug.host_state.HostState` and turns its events
into batches (one per received payload; a payload that mixes live and ``is_historical``
metrics yields one live batch and one ``historical=True`` batch), NCMD rebirth requests
and, for a primary host (``host_id``), the Sparkplug 3.0 STATE message.

Strings: a String or Text metric mapped onto a ``data_type: string`` tag becomes a text
sample (the batch's text column exists only when a payload holds one); a numeric
metric on a string tag is ``BAD_DECODING_ERROR``; a string metric on a numeric tag is
counted in ``non_numeric`` and skipped.

Qualities: Good (or the metric's ``Quality`` property); ``Bad`` for a null metric;
``BAD_DECODING_ERROR`` for a value that does not fit its datatype (or its tag);
``BAD_NO_COMMUNICATION`` for the tags of an edge node or device after its
NDEATH/DDEATH (once per death);
``BAD_COMMUNICATION_ERROR`` while our broker is unreachable (once per outage, ``Link``).

Commands (the :class:`~isthmus.connectors.base.Commander` interface): ``write`` sends a
DCMD (NCMD for a node-level metric) to the metric a writable tag maps onto, as its
last birth declared it (name or alias, datatype); ``read_back`` waits for the metric's
next live value in a data message (Sparkplug has no read service).

Metrics (``source.<name>.*``): ``messages``, ``values``, ``malformed`` (undecodable
payloads), ``rejected`` (metrics whose value does not fit their datatype), ``unmapped``
(birth metrics with no configured tag), ``non_numeric``, ``dropped``, ``rebirth_requests``,
the :class:`HostState` counters (``gaps``, ``late``, ``reordered``, ``before_birth``,
``unknown_alias``, ``alias_collisions``, ``stale_deaths``, ``births``, ``deaths``...),
``writes``, ``write_errors``, ``errors``, ``reconnects``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import aiomqtt
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from isthmus.connectors.base import (
    BoundTag,
    CommandWriteError,
    Link,
    SourceContext,
    Value,
    tag_index,
)
from isthmus.connectors.readback import ReadBacks
from isthmus.connectors.sparkplug.codec import (
    BOOLEAN,
    DATATYPE_FROM,
    DATATYPE_OF,
    REBIRTH_METRIC,
    DecodeError,
    Metric,
    OutMetric,
    command_value,
    decode,
    encode,
    parse_topic,
    state_topic,
    topic,
)
from isthmus.connectors.sparkplug.config import SparkplugSourceConfig, SparkplugTagConfig
from isthmus.connectors.sparkplug.host_state import Death, Event, HostState, Rebirth, Update
from isthmus.model.batch import Batch
from isthmus.model.config import DataType, TagConfig
from isthmus.model.quality import Quality
from isthmus.net.link import LinkLost
from isthmus.net.mqtt import make_client

TICK = 0.25
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
DeviceKey = tuple[str, str, str | None]


def sanitise(text: str) -> str:
    """One path segment from a Sparkplug id or metric name: ``/`` becomes ``.``, any
    other character outside ``A-Za-z0-9_.-`` becomes ``_``, leading ``_ . -`` go."""
    return _UNSAFE.sub("_", text.replace("/", ".")).lstrip("_.-")


def tag_path(template: str, group: str, node: str, device: str, metric: str) -> str | None:
    """The tag path a metric maps onto, or None if a part sanitises to nothing."""
    parts = device.split(":")
    values = {
        "group": sanitise(group),
        "node": sanitise(node),
        "device": sanitise(device),
        "metric": sanitise(metric),
        "device_path": "/".join(sanitise(p) for p in parts) if len(parts) == 4 else "",
    }
    if "{device_path}" not in template:
        values.pop("device_path")
    if not all(values.values()):
        return None
    return template.format(**values)


def _text_column(texts: list[str | None]) -> npt.NDArray[np.object_] | None:
    """The batch's text column, or None when no row is text (the numeric fast case)."""
    if all(t is None for t in texts):
        return None
    column = np.empty(len(texts), dtype=object)
    column[:] = texts
    return column


@dataclass(frozen=True, slots=True)
class CommandTarget:
    """Where a tag's metric lives, as its last birth told: what a command names."""

    group: str
    node: str
    device: str | None
    """None: a node-level metric (NCMD)."""
    metric: str
    alias: int | None
    datatype: int | None


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode()


def rebirth_payload(timestamp_ms: int) -> bytes:
    return encode(
        [OutMetric(REBIRTH_METRIC, None, BOOLEAN, True)], seq=None, timestamp_ms=timestamp_ms
    )


class SparkplugHost:
    def __init__(
        self,
        config: SparkplugSourceConfig,
        tags: Sequence[BoundTag[SparkplugTagConfig]],
        ctx: SourceContext,
    ) -> None:
        self.name = config.name
        self.config = config
        self._ctx = ctx
        self._by_path = {t.config.path: t.tag_id for t in tags}
        self._index = tag_index(tags)
        self.targets: dict[int, CommandTarget] = {}
        """Tag id → its metric, from the births seen (where a command goes)."""
        self._read_backs = ReadBacks()
        self._client: aiomqtt.Client | None = None
        self._text_ids = {t.tag_id for t in tags if t.config.data_type is DataType.STRING}
        self.state = HostState(
            config.reorder_window, config.reorder_timeout, config.rebirth_min_interval
        )
        self._resolved: dict[tuple[str, str, str | None, str], int | None] = {}
        self._device_tags: dict[DeviceKey, set[int]] = defaultdict(set)
        self._burst = ctx.burst_log(self.name)
        ids = np.array([t.tag_id for t in tags], dtype=np.int32)
        self._link = Link("Sparkplug", config.name, f"{config.host}:{config.port}", ids, ctx)
        self._counted: dict[str, int] = {}
        self._m = f"source.{config.name}."
        self._state_ts = 0
        self._created = 0

    @property
    def connected(self) -> bool:
        return self._link.connected

    # ------------------------------------------------------------------ mapping

    def _tag_id(self, group: str, node: str, device: str | None, metric: str) -> int | None:
        key = (group, node, device, metric)
        if key in self._resolved:
            return self._resolved[key]
        dev = device if device is not None else self.config.node_device
        path = tag_path(self.config.tag_template, group, node, dev, metric)
        tag_id = self._by_path.get(path) if path is not None else None
        if len(self._resolved) > 100_000:
            self._resolved.clear()
        self._resolved[key] = tag_id
        return tag_id

    def _create_tags(self, update: Update) -> None:
        """Create the tags of a birth's metrics that map onto no tag yet (``auto_tags``):
        at the template's path, typed from the birth; paths that are not a valid
        area/line/cell/equipment/tag stay unmapped (counted, logged)."""
        assert self._ctx.declare_tags is not None
        wanted: dict[str, TagConfig] = {}
        for name, metric in update.metrics:
            if self._tag_id(update.group, update.node, update.device, name) is not None:
                continue
            dev = update.device if update.device is not None else self.config.node_device
            path = tag_path(self.config.tag_template, update.group, update.node, dev, name)
            kind = DATATYPE_FROM.get(metric.datatype or 0)
            if path is None or kind is None or path in wanted:
                continue
            try:
                wanted[path] = TagConfig(path=path, data_type=kind, unit=metric.unit or "")
            except ValidationError:
                continue
        room = self.config.max_auto_tags - self._created
        if not wanted:
            return
        if room < len(wanted):
            self._ctx.metrics.inc(self._m + "auto_tags_refused", len(wanted) - max(room, 0))
            self._burst.warning(
                "auto_tags",
                "Sparkplug source %s: max_auto_tags (%d) reached; %d metric(s) of %s/%s stay "
                "unmapped",
                self.name,
                self.config.max_auto_tags,
                len(wanted) - max(room, 0),
                update.group,
                update.node,
            )
            wanted = dict(list(wanted.items())[: max(room, 0)])
        given = self._ctx.declare_tags(list(wanted.values()))
        for path, tag_id in given.items():
            self._by_path[path] = tag_id
            if wanted[path].data_type is DataType.STRING:
                self._text_ids.add(tag_id)
        self._created += len(given)
        self._ctx.metrics.inc(self._m + "auto_tags", len(given))
        self._link.add_tags(list(given.values()))
        # forget "no tag" answers cached for these metrics
        self._resolved = {k: v for k, v in self._resolved.items() if v is not None}

    def _batches(self, update: Update, now_ns: int) -> list[Batch]:
        metrics = self._ctx.metrics
        rows: dict[bool, tuple[list[int], list[int], list[float], list[int], list[str | None]]]
        rows = {}
        text_ids = self._text_ids
        unmapped: list[str] = []
        default_ts = now_ns
        use_source = self.config.timestamps == "source"
        if use_source and update.timestamp_ms is not None:
            default_ts = update.timestamp_ms * 1_000_000
        if update.birth and self.config.auto_tags and self._ctx.declare_tags is not None:
            self._create_tags(update)
        read_backs = self._read_backs
        for name, metric in update.metrics:
            tag_id = self._tag_id(update.group, update.node, update.device, name)
            if tag_id is None:
                if update.birth:
                    unmapped.append(name)
                continue
            if update.birth:
                self._device_tags[(update.group, update.node, update.device)].add(tag_id)
                self.targets[tag_id] = CommandTarget(
                    update.group, update.node, update.device, name, metric.alias, metric.datatype
                )
            if read_backs and tag_id in read_backs:
                self._deliver(tag_id, metric)
            text: str | None = None
            is_text_tag = tag_id in text_ids
            if is_text_tag and not metric.is_null and metric.error is None:
                text = metric.text
                if text is None:
                    metric = replace(
                        metric,
                        error=f"metric {name}: datatype {metric.datatype} on a string tag",
                    )
            elif not metric.numeric and metric.error is None and not metric.is_null:
                metrics.inc(self._m + "non_numeric")
                continue
            if text is not None:
                quality = metric.quality if metric.quality is not None else int(Quality.GOOD)
                value = math.nan
            elif metric.error is not None:
                metrics.inc(self._m + "rejected")
                self._burst.warning("rejected", "Sparkplug source %s: %s", self.name, metric.error)
                quality = int(Quality.BAD_DECODING_ERROR)
                value = math.nan
            elif metric.is_null:
                quality = metric.quality if metric.quality is not None else int(Quality.BAD)
                value = math.nan
            else:
                quality = metric.quality if metric.quality is not None else int(Quality.GOOD)
                value = metric.value
            ts = default_ts
            if use_source and metric.timestamp_ms is not None:
                ts = metric.timestamp_ms * 1_000_000
            cols = rows.setdefault(metric.is_historical, ([], [], [], [], []))
            cols[0].append(tag_id)
            cols[1].append(ts)
            cols[2].append(value)
            cols[3].append(quality)
            cols[4].append(text)
        if unmapped:
            metrics.inc(self._m + "unmapped", len(unmapped))
            self._burst.warning(
                f"unmapped:{update.group}/{update.node}/{update.device}",
                "Sparkplug source %s: %d metric(s) of %s/%s/%s have no configured tag "
                "(e.g. %r → %s)",
                self.name,
                len(unmapped),
                update.group,
                update.node,
                update.device or "-",
                unmapped[0],
                tag_path(
                    self.config.tag_template,
                    update.group,
                    update.node,
                    update.device or self.config.node_device,
                    unmapped[0],
                ),
            )
        out = []
        for historical in (False, True):
            if historical in rows:
                ids, ts_col, values, qualities, texts = rows[historical]
                out.append(
                    Batch(
                        np.array(ids, dtype=np.int32),
                        np.array(ts_col, dtype=np.int64),
                        np.array(values, dtype=np.float64),
                        np.array(qualities, dtype=np.uint32),
                        historical,
                        _text_column(texts),
                    )
                )
        return out

    def _deliver(self, tag_id: int, metric: Metric) -> None:
        """The first live, Good value of an awaited tag after its command: its read back."""
        if metric.is_historical or metric.is_null or metric.error:
            return
        if metric.quality is not None and metric.quality & 0x80000000:
            return
        raw: float | str | None = metric.text if metric.text is not None else None
        if raw is None:
            if not metric.numeric:
                return
            raw = metric.value
        self._read_backs.deliver(tag_id, raw)

    # ------------------------------------------------------------------ commands

    async def write(self, tag: str | int, value: Value) -> None:
        """Send a command to the metric a writable tag (id, UNS path or tag map path)
        maps onto: a DCMD to its device (an NCMD for a node-level metric), QoS 0 and not
        retained as Sparkplug requires, the value encoded with the metric's datatype from
        its birth and named by its alias when the birth gave one.  Sparkplug has no
        acknowledgement: the write returns once the message is handed to the broker
        connection, and only :meth:`read_back` tells whether the edge node applied it.

        Raises :class:`~isthmus.connectors.base.CommandWriteError`: ``failed`` when
        nothing was published (unknown or non-writable tag, no birth seen for its metric,
        the edge node or device is dead, a value that does not fit the datatype, not
        connected, the client refused the message); ``uncertain`` when the message was
        handed to the client but not written out within ``timeout``."""
        bound = self._index.get(tag)
        if bound is None:
            raise CommandWriteError(f"Sparkplug source {self.name}: no tag {tag!r}")
        cfg = bound.config
        if not cfg.writable:
            raise CommandWriteError(f"{cfg.path}: not writable (set writable: true)")
        target = self.targets.get(bound.tag_id)
        if target is None:
            raise CommandWriteError(
                f"{cfg.path}: no birth maps a metric onto this tag yet (nowhere to send)"
            )
        where = f"{target.group}/{target.node}" + (f"/{target.device}" if target.device else "")
        if not self.state.is_born(target.group, target.node, target.device):
            raise CommandWriteError(f"{cfg.path}: {where} is offline (death, no birth since)")
        datatype = target.datatype or DATATYPE_OF[cfg.data_type]
        try:
            wire = command_value(cfg, value, datatype)
        except ValueError as exc:
            raise CommandWriteError(f"{cfg.path}: metric {target.metric!r}: {exc}") from None
        client = self._client
        if client is None or not self._link.connected:
            self._ctx.metrics.inc(self._m + "write_errors")
            raise CommandWriteError(f"{cfg.path}: Sparkplug source {self.name} is not connected")
        name = None if target.alias is not None else target.metric
        now_ms = self._ctx.clock.now_ns() // 1_000_000
        payload = encode(
            [OutMetric(name, target.alias, datatype, wire, timestamp_ms=now_ms)],
            seq=None,
            timestamp_ms=now_ms,
        )
        kind = "DCMD" if target.device is not None else "NCMD"
        self._read_backs.arm(bound.tag_id, cfg)  # before publishing: a fast echo counts
        try:
            await client.publish(
                topic(target.group, kind, target.node, target.device),
                payload,
                qos=0,
                retain=False,
                timeout=self.config.timeout,
            )
        except aiomqtt.MqttCodeError as exc:  # refused by the client: nothing sent
            self._read_backs.disarm(bound.tag_id)
            self._ctx.metrics.inc(self._m + "write_errors")
            raise CommandWriteError(f"{cfg.path}: {kind} to {where} not published: {exc}") from None
        except aiomqtt.MqttError as exc:
            self._ctx.metrics.inc(self._m + "write_errors")
            raise CommandWriteError(
                f"{cfg.path}: {kind} to {where} handed to the client but not sent within "
                f"{self.config.timeout:g} s ({exc}): it may still reach the edge node",
                "uncertain",
            ) from None
        self._ctx.metrics.inc(self._m + "writes")
        self._ctx.log.info(
            "Sparkplug source %s: %s %s = %r to %s", self.name, kind, target.metric, wire, where
        )

    async def read_back(self, tag: str | int, timeout: float) -> Value | None:  # noqa: ASYNC109
        """The tag's next live value in an NDATA/DDATA (or a birth) received after the
        last command to it was published (without a command: after this call), waited for
        at most ``timeout`` seconds.  Sparkplug has no read service: an edge node reports
        a commanded metric's new value in its next data message; ``None`` if none came."""
        bound = self._index.get(tag)
        if bound is None:
            return None
        return await self._read_backs.next_value(bound.tag_id, bound.config, timeout)

    def _death_batch(self, death: Death, now_ns: int) -> Batch | None:
        ids: set[int] = set()
        for (group, node, device), tag_ids in self._device_tags.items():
            if (group, node) == (death.group, death.node) and (
                death.device is None or device == death.device
            ):
                ids |= tag_ids
        if not ids:
            return None
        n = len(ids)
        return Batch(
            np.array(sorted(ids), dtype=np.int32),
            np.full(n, now_ns, dtype=np.int64),
            np.full(n, np.nan, dtype=np.float64),
            np.full(n, Quality.BAD_NO_COMMUNICATION, dtype=np.uint32),
        )

    def _sync_counts(self) -> None:
        for key, value in self.state.counts.items():
            delta = value - self._counted.get(key, 0)
            if delta:
                self._ctx.metrics.inc(self._m + key, delta)
                self._counted[key] = value

    def events_to_output(self, events: list[Event]) -> tuple[list[Batch], list[Rebirth]]:
        now_ns = self._ctx.clock.now_ns()
        batches: list[Batch] = []
        rebirths: list[Rebirth] = []
        for event in events:
            if isinstance(event, Update):
                batches.extend(self._batches(event, now_ns))
            elif isinstance(event, Death):
                batch = self._death_batch(event, now_ns)
                if batch is not None:
                    batches.append(batch)
            else:
                rebirths.append(event)
        self._sync_counts()
        return batches, rebirths

    def handle(
        self, topic_name: str, payload: bytes, now: float | None = None
    ) -> tuple[list[Batch], list[Rebirth]]:
        """Decode one message; the batches to emit and the rebirths to request
        (public for tests and benchmarks)."""
        self._ctx.metrics.inc(self._m + "messages")
        parsed = parse_topic(topic_name)
        if parsed is None:
            return [], []
        try:
            decoded = decode(payload)
        except DecodeError as exc:
            self._ctx.metrics.inc(self._m + "malformed")
            self._burst.warning(
                "malformed", "Sparkplug source %s: %s on %s", self.name, exc, topic_name
            )
            return [], []
        mono = time.monotonic() if now is None else now
        return self.events_to_output(self.state.receive(parsed, decoded, mono))

    # ------------------------------------------------------------------ I/O

    async def _emit(self, batches: list[Batch]) -> None:
        for batch in batches:
            self._ctx.metrics.inc(self._m + "values", len(batch))
            await self._ctx.emit(batch)

    async def _request(self, client: aiomqtt.Client, rebirths: list[Rebirth]) -> None:
        if not self.config.send_rebirth:
            return
        for req in rebirths:
            self._ctx.metrics.inc(self._m + "rebirth_requests")
            self._burst.warning(
                f"rebirth:{req.group}/{req.node}",
                "Sparkplug source %s: requesting a rebirth of %s/%s (%s)",
                self.name,
                req.group,
                req.node,
                req.reason,
            )
            now_ms = self._ctx.clock.now_ns() // 1_000_000
            await client.publish(topic(req.group, "NCMD", req.node), rebirth_payload(now_ms), qos=0)

    async def _ticker(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(TICK)
            batches, rebirths = self.events_to_output(self.state.tick(time.monotonic()))
            await self._emit(batches)
            await self._request(client, rebirths)

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        if self.config.host_id is not None:
            await client.publish(
                state_topic(self.config.host_id),
                state_payload(True, self._state_ts),
                qos=1,
                retain=True,
            )

    def _on_drop(self) -> None:
        self._ctx.metrics.inc(self._m + "dropped")
        self._burst.warning(
            "dropped", "Sparkplug source %s: incoming queue full, oldest dropped", self.name
        )

    async def _session(self, client: aiomqtt.Client) -> None:
        cfg = self.config
        self._client = client
        own_state = state_topic(cfg.host_id) if cfg.host_id is not None else None
        if own_state is not None:
            await client.subscribe(own_state, qos=1)
            await self._publish_state(client)
        for group in cfg.groups:
            await client.subscribe(f"spBv1.0/{group}/#", qos=cfg.qos)
        self.state.reset()
        self._link.up()
        ticker = asyncio.create_task(self._ticker(client))
        try:
            async for message in client.messages:
                name = message.topic.value
                data = message.payload
                if not isinstance(data, bytes | bytearray):
                    data = b"" if data is None else str(data).encode()
                if name == own_state:
                    await self._on_own_state(client, bytes(data))
                    continue
                batches, rebirths = self.handle(name, bytes(data))
                await self._emit(batches)
                await self._request(client, rebirths)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _on_own_state(self, client: aiomqtt.Client, data: bytes) -> None:
        """Sparkplug 3.0: a host that sees its STATE offline (a stale will) restates it."""
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("online") is not True:
            await self._publish_state(client)

    async def run(self) -> None:
        """Consume until cancelled; reconnects with capped backoff; never raises otherwise."""
        await self._link.supervise(
            self._connection,
            errors=(aiomqtt.MqttError,),
            close=lambda: None,  # the client context closes the connection
            reconnect_max=self.config.reconnect_max,
        )

    async def _connection(self) -> None:
        cfg = self.config
        will = None
        if cfg.host_id is not None:
            self._state_ts = self._ctx.clock.now_ns() // 1_000_000
            will = aiomqtt.Will(
                state_topic(cfg.host_id),
                state_payload(False, self._state_ts),
                qos=1,
                retain=True,
            )
        client = make_client(
            cfg,
            cfg.client_id or f"isthmus-{cfg.name}",
            clean_session=True,
            max_queued_incoming=cfg.max_queued_messages,
            on_drop=self._on_drop,
            will=will,
        )
        try:
            async with client:
                try:
                    await self._session(client)
                except asyncio.CancelledError:
                    await self._goodbye(client)
                    raise
        finally:
            self._client = None
        raise LinkLost("disconnected")

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """On a clean stop a primary host says offline itself (the will only fires on loss)."""
        if self.config.host_id is None:
            return
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await asyncio.wait_for(
                client.publish(
                    state_topic(self.config.host_id),
                    state_payload(False, self._state_ts),
                    qos=1,
                    retain=True,
                ),
                timeout=1.0,
            )
