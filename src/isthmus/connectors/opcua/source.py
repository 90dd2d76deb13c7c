"""OPC UA source: one subscription, one batch per publish response.

asyncua's :class:`~asyncua.common.subscription.Subscription` turns every data change
into its own event object and schedules a task per event for the handler.  We skip
that path: :class:`BatchSubscription` overrides ``publish_callback`` (the coroutine the
session's publish loop calls with each ``PublishResult``) and hands the whole
``DataChangeNotification`` to :meth:`OpcUaSource._on_datachange`, which builds one
:class:`~isthmus.model.batch.Batch` with NumPy.  Client handles are the tag's index in
the source, so mapping handles to tag ids is one fancy-index into a preallocated array.

Qualities produced: the server's StatusCode as is (Good, Uncertain_*, Bad_*);
``BAD_DECODING_ERROR`` for a value that is not a number or a bool;
``BAD_CONFIGURATION_ERROR`` for a tag whose node the server refuses at subscribe time;
``BAD_COMMUNICATION_ERROR`` for every tag, once, when the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from isthmus.connectors.base import Backoff, BoundTag, Link, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.model.batch import Batch
from isthmus.model.quality import Quality, quality_name
from isthmus.pipeline.metrics import BurstLog

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NUMERIC = frozenset({float, int, bool})
_DISCONNECT_TIMEOUT = 1.0


def _to_ns(stamp: datetime) -> int:
    """An OPC UA DateTime (UTC, microsecond resolution in asyncua) as int ns."""
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return ((stamp - _EPOCH) // _MICROSECOND) * 1000


class _ConnectionLost(Exception):
    pass


async def _abandon(client: Any) -> None:
    """Stop a client's background tasks and drop its socket without talking to the
    server (which is gone): no close-session round trips, no warnings from asyncua."""
    with contextlib.suppress(Exception):
        client.uaclient.request_disconnect()
    session = getattr(client.uaclient, "session", None)
    tasks = [
        getattr(client, "_supervisor_task", None),
        getattr(client, "_stale_watchdog_task", None),
        getattr(client, "_renew_channel_task", None),
        getattr(session, "_publish_task", None),
    ]
    pending = [t for t in tasks if isinstance(t, asyncio.Task) and not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=_DISCONNECT_TIMEOUT)
    with contextlib.suppress(Exception):
        client.uaclient.disconnect_socket()


class BatchSubscription(Subscription):
    """A subscription that delivers each publish response whole to its source."""

    def __init__(self, session: Any, params: Any, source: OpcUaSource) -> None:
        super().__init__(session, params, None, queue_maxsize=1)
        self._source = source

    async def publish_callback(self, publish_result: Any) -> None:
        self.last_publish_at = time.monotonic()
        message = publish_result.NotificationMessage
        data = message.NotificationData
        if not data:
            return  # keep-alive
        self.last_sequence_number = int(message.SequenceNumber)
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                await self._source._on_datachange(notification)
            elif isinstance(notification, ua.StatusChangeNotification):
                self._source._on_status_change(notification)


class OpcUaSource:
    """Subscribes to the configured nodes of one OPC UA server."""

    def __init__(
        self,
        config: OpcUaSourceConfig,
        tags: Sequence[BoundTag[OpcUaTagConfig]],
        ctx: SourceContext,
    ) -> None:
        self.name = config.name
        self.config = config
        self.ctx = ctx
        self.tags = list(tags)
        self._tag_ids = np.array([t.tag_id for t in self.tags], dtype=np.int32)
        # Handle i (the client handle of tag i) → its tag id; one slot per tag.
        self._handle_to_tag = self._tag_ids.copy()
        self._client: Any = None
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._link = Link("opcua", self.name, config.endpoint, self._tag_ids, ctx)
        self._config_logged = False
        self._burst = BurstLog(ctx.log)
        prefix = f"source.{self.name}"
        self._m_publishes = f"{prefix}.publishes"
        self._m_notifications = f"{prefix}.notifications"
        self._m_values = f"{prefix}.values"
        self._m_errors = f"{prefix}.errors"
        self._m_decode = f"{prefix}.decode_errors"

    @property
    def connected(self) -> bool:
        return self._link.connected

    # -- life cycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe until cancelled; reconnects with capped backoff; never raises otherwise."""
        cap = self.config.reconnect_max
        backoff = Backoff(initial=min(0.5, cap), cap=cap)
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except (_ConnectionLost, OSError, TimeoutError, ConnectionError, UaError) as e:
                    await self._link.down(str(e) or type(e).__name__)
                except Exception as exc:  # a bug must not kill the source: log and retry
                    self.ctx.log.exception("opcua source %s: unexpected error", self.name)
                    await self._link.down(f"unexpected {type(exc).__name__}: {exc}")
                else:
                    backoff.reset()
                await self._teardown()
                await asyncio.sleep(backoff.next_delay())
        finally:
            await self._teardown()

    async def _session(self) -> None:
        """Connect, subscribe, then wait until the connection is lost."""
        client = Client(self.config.endpoint, timeout=self.config.timeout)
        client.session_timeout = 600_000  # ms; the common server maximum, avoids a revision
        self._client = client
        lost = asyncio.Event()
        self._lost = lost

        async def on_lost(exc: Exception) -> None:
            self._lost_reason = f"{type(exc).__name__}: {exc}"
            lost.set()

        client.connection_lost_callback = on_lost
        await asyncio.wait_for(client.connect(), self.config.timeout)
        await asyncio.wait_for(self._subscribe(client), self.config.timeout * 2)
        self._link.up()
        await lost.wait()
        raise _ConnectionLost(self._lost_reason or "connection lost")

    async def _subscribe(self, client: Any) -> None:
        period_ms = self.config.publishing_interval * 1000.0
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = period_ms
        params.RequestedLifetimeCount = 10000
        params.RequestedMaxKeepAliveCount = client.get_keepalive_count(period_ms)
        params.MaxNotificationsPerPublish = 0  # no limit: one response carries all changes
        params.PublishingEnabled = True
        params.Priority = 0
        sub = BatchSubscription(client.uaclient.session, params, self)
        result = await sub.init()
        revised = client.get_subscription_revised_params(params, result)
        if revised:
            await sub.update(revised)

        requests: list[Any] = []
        rejected: list[tuple[int, str]] = []
        sampling_ms = self.config.sampling_interval * 1000.0
        for handle, tag in enumerate(self.tags):
            try:
                node_id = ua.NodeId.from_string(tag.config.node)
            except Exception as exc:
                rejected.append((handle, f"{tag.config.node!r}: {exc}"))
                continue
            requests.append(self._item_request(node_id, handle, sampling_ms))
        if requests:
            outcomes = await sub.create_monitored_items(requests)
            for request, outcome in zip(requests, outcomes, strict=True):
                if isinstance(outcome, ua.StatusCode):
                    handle = request.RequestedParameters.ClientHandle
                    node = self.tags[handle].config.node
                    rejected.append((handle, f"{node}: {quality_name(outcome.value)}"))
        if rejected:
            await self._reject(rejected)

    def _item_request(self, node_id: Any, handle: int, sampling_ms: float) -> Any:
        read = ua.ReadValueId()
        read.NodeId = node_id
        read.AttributeId = AttributeIds.Value
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = sampling_ms
        params.QueueSize = self.config.queue_size
        params.DiscardOldest = True
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = read
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    async def _reject(self, rejected: list[tuple[int, str]]) -> None:
        """Tags the server refused: Bad (configuration) once per subscribe, logged once."""
        if not self._config_logged:
            self._config_logged = True
            shown = "; ".join(reason for _, reason in rejected[:10])
            more = f" and {len(rejected) - 10} more" if len(rejected) > 10 else ""
            self.ctx.log.warning(
                "opcua source %s: %d tag(s) cannot be subscribed: %s%s",
                self.name,
                len(rejected),
                shown,
                more,
            )
        self.ctx.metrics.inc(self._m_errors, len(rejected))
        handles = np.array([h for h, _ in rejected], dtype=np.intp)
        n = len(handles)
        await self.ctx.emit(
            Batch(
                self._handle_to_tag[handles],
                np.full(n, self.ctx.clock.now_ns(), dtype=np.int64),
                np.full(n, np.nan, dtype=np.float64),
                np.full(n, Quality.BAD_CONFIGURATION_ERROR, dtype=np.uint32),
            )
        )

    async def _teardown(self) -> None:
        """Close the client: politely if the session is healthy, else drop it quietly."""
        client, self._client = self._client, None
        healthy = self._link.connected and self._lost is not None and not self._lost.is_set()
        self._link.connected = False
        if client is None:
            return
        client.connection_lost_callback = None
        if healthy:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), _DISCONNECT_TIMEOUT)
        await _abandon(client)

    # -- notifications ------------------------------------------------------------------

    def _on_status_change(self, notification: Any) -> None:
        status = notification.Status
        code = int(getattr(status, "value", 0))
        if code & 0x80000000 and self._lost is not None:
            self._lost_reason = f"subscription status {quality_name(code)}"
            self._lost.set()

    async def _on_datachange(self, notification: Any) -> None:
        batch = self.batch_of(notification.MonitoredItems)
        if batch is not None:
            await self.ctx.emit(batch)

    def batch_of(self, items: Sequence[Any]) -> Batch | None:
        """One batch from the ``MonitoredItemNotification`` list of a publish response."""
        n = len(items)
        if n == 0:
            return None
        handle_list: list[int] = []
        code_list: list[int] = []
        values: list[Any] = []
        stamps: list[datetime | None] = []
        for item in items:
            handle_list.append(item.ClientHandle)
            dv = item.Value
            variant = dv.Value
            values.append(None if variant is None else variant.Value)
            status = dv.StatusCode
            code_list.append(0 if status is None else status.value)
            stamps.append(dv.SourceTimestamp or dv.ServerTimestamp)
        handles = np.array(handle_list, dtype=np.intp)
        codes = np.array(code_list, dtype=np.uint32)

        metrics = self.ctx.metrics
        known = handles < len(self._handle_to_tag)
        if not known.all():
            self._burst.warning(
                "handle", "opcua source %s: notification for unknown client handles", self.name
            )
        ts = self._timestamps(stamps)
        if set(map(type, values)) <= _NUMERIC:
            value = np.array(values, dtype=np.float64)
        else:
            value = self._slow_values(values, codes)
        tag_id = self._handle_to_tag[np.where(known, handles, 0)]
        batch = Batch(tag_id, ts, value, codes)
        if not known.all():
            batch = batch.select(known)
        metrics.inc(self._m_publishes)
        metrics.inc(self._m_notifications, n)
        metrics.inc(self._m_values, int(np.count_nonzero(batch.quality == 0)))
        return batch

    def _timestamps(self, stamps: list[datetime | None]) -> npt.NDArray[np.int64]:
        try:
            return np.array([_to_ns(s) for s in stamps], dtype=np.int64)  # type: ignore[arg-type]
        except (TypeError, AttributeError, OverflowError):
            now = self.ctx.clock.now_ns()
            return np.array([now if s is None else _to_ns(s) for s in stamps], dtype=np.int64)

    def _slow_values(self, values: list[Any], codes: npt.NDArray[np.uint32]) -> npt.NDArray[Any]:
        """Values with non-numbers: those samples become BAD_DECODING_ERROR (in ``codes``)."""
        out = np.full(len(values), np.nan, dtype=np.float64)
        bad = 0
        for i, v in enumerate(values):
            if type(v) in _NUMERIC:
                out[i] = v
            elif v is None and codes[i] & 0x80000000:
                continue  # a Bad sample without a value: keep the server's status
            else:
                codes[i] = Quality.BAD_DECODING_ERROR
                bad += 1
                self._burst.warning(
                    "decode",
                    "opcua source %s: non-numeric value %.40r: Bad_DecodingError",
                    self.name,
                    v,
                )
        if bad:
            self.ctx.metrics.inc(self._m_decode, bad)
            self.ctx.metrics.inc(self._m_errors, bad)
        return out
