"""OPC UA source: one subscription per tag group, one batch per publish response.

asyncua's :class:`~asyncua.common.subscription.Subscription` turns every data change
into its own event object and schedules a task per event for the handler.  We skip
that path: :class:`BatchSubscription` overrides ``publish_callback`` (the coroutine the
session's publish loop calls with each ``PublishResult``) and hands the whole
``DataChangeNotification`` to :meth:`OpcUaSource._on_datachange`, which builds one
:class:`~isthmus.model.batch.Batch` with NumPy.  Client handles are the monitored
item's index (:mod:`~isthmus.connectors.opcua.items`), so mapping handles to tags is
one fancy-index into a preallocated array; an array item is split into its element
tags.  Each subscription group is its own subscription, its items carrying the
group's server-side ``DataChangeFilter`` (absolute or percent deadband).

String tags (``data_type: string``): a String value becomes the row's ``text`` (the
batch's text column exists only when a string row is in it), a LocalizedText its
``Text``, a null String the empty text; a ByteString is binary, not text, and is
refused like any other non-text value.

Qualities produced: the server's StatusCode as is (Good, Uncertain_*, Bad_*);
``BAD_DECODING_ERROR`` for a value that is not a number or a bool (not a String or a
LocalizedText for a string tag; an array where a scalar is configured);
``BAD_OUT_OF_RANGE`` for an array element beyond the array the server sent;
``BAD_CONFIGURATION_ERROR`` for a tag whose node (or deadband) the server refuses at
subscribe time, or with a percent deadband on a node without ``EURange``;
``BAD_COMMUNICATION_ERROR`` for every tag, once, when the connection is lost or the
server sends bytes that are not OPC UA (see :mod:`~isthmus.connectors.opcua.guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import Subscription
from asyncua.ua import status_codes
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from isthmus.connectors.base import (
    BoundTag,
    CommandWriteError,
    Link,
    Outcome,
    SourceContext,
    Value,
    engineering,
    raw_number,
    round_half_away,
    scaled,
)
from isthmus.connectors.opcua import guard, nodes, security
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig, SubscriptionGroup
from isthmus.connectors.opcua.items import plan_items
from isthmus.model.batch import Batch
from isthmus.model.config import DataType
from isthmus.model.quality import SEVERITY_MASK, Quality, quality_name
from isthmus.net.backoff import Backoff

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


class OpcUaWriteError(CommandWriteError):
    """A write did not succeed; ``outcome`` ``failed`` (unknown or non-writable tag, value
    not convertible to the node's type, not connected, a Bad StatusCode from the server)
    or ``uncertain`` (sent, then the connection dropped or the answer did not come)."""


# Built-in DataType node ids (namespace 0) that a write can target: id → VariantType.
_WRITABLE_TYPES: dict[int, ua.VariantType] = {
    1: ua.VariantType.Boolean,
    2: ua.VariantType.SByte,
    3: ua.VariantType.Byte,
    4: ua.VariantType.Int16,
    5: ua.VariantType.UInt16,
    6: ua.VariantType.Int32,
    7: ua.VariantType.UInt32,
    8: ua.VariantType.Int64,
    9: ua.VariantType.UInt64,
    10: ua.VariantType.Float,
    11: ua.VariantType.Double,
    290: ua.VariantType.Double,  # Duration
    12: ua.VariantType.String,
    21: ua.VariantType.LocalizedText,
}
_INT_LIMITS: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
_SERVER_STATE = "i=2259"  # Server.ServerStatus.State
_BUILD_INFO = {  # Server.ServerStatus.BuildInfo.*
    "product_name": "i=2263",
    "manufacturer_name": "i=2262",
    "software_version": "i=2264",
    "build_number": "i=2265",
    "product_uri": "i=2261",
}
_RUNNING = 0  # ServerState.Running
_DEADBAND_TYPES = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}
# Status codes a server answers for a deadband it cannot apply: the hint to give.
_FILTER_REFUSED = {
    int(StatusCodes.BadFilterNotAllowed): "the server does not allow a deadband on this node",
    int(StatusCodes.BadDeadbandFilterInvalid): "the deadband is invalid for this node",
    int(StatusCodes.BadMonitoredItemFilterUnsupported): "the server supports no deadband",
    int(StatusCodes.BadMonitoredItemFilterInvalid): "the server refuses the deadband",
}


def status_text(code: int) -> str:
    """A StatusCode for people: asyncua's name (BadNodeIdUnknown) and hex value."""
    try:
        name, _doc = status_codes.get_name_and_doc(int(code))
    except Exception:
        return quality_name(code)
    return f"{name} (0x{int(code) & 0xFFFFFFFF:08X})"


def coerce(value: float | int | bool | str, vtype: ua.VariantType) -> Any:
    """``value`` as the Python value of a Variant of ``vtype``; ValueError if it does not
    fit (a fraction for an integer node, out of the type's range, NaN or infinity, a
    number for a String node or text for a number node)."""
    if vtype in (ua.VariantType.String, ua.VariantType.LocalizedText):
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not text (the node is a {vtype.name})")
        return value if vtype is ua.VariantType.String else ua.LocalizedText(value)
    if isinstance(value, str):
        raise ValueError(f"{value!r} is text, not a number or a bool ({vtype.name} node)")
    if isinstance(value, bool):
        number: float | int = int(value)
    elif isinstance(value, int | float):
        number = value
    else:
        raise ValueError(f"{value!r} is not a number or a bool")
    if vtype is ua.VariantType.Boolean:
        if number not in (0, 1):
            raise ValueError(f"{value!r} is not a bool (0/1, true/false)")
        return bool(number)
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        as_float = float(number)
        if not math.isfinite(as_float):
            raise ValueError(f"{value!r} is not a finite number")
        if vtype is ua.VariantType.Float and abs(as_float) > 3.4028234663852886e38:
            raise ValueError(f"{value!r} is out of the Float range")
        return as_float
    limits = _INT_LIMITS.get(vtype)
    if limits is None:
        raise ValueError(f"nodes of type {vtype.name} cannot be written")
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number ({vtype.name})")
    as_int = int(number)
    if not limits[0] <= as_int <= limits[1]:
        raise ValueError(f"{value!r} is out of the {vtype.name} range {limits[0]}..{limits[1]}")
    return as_int


def to_node_raw(config: OpcUaTagConfig, value: Value, vtype: ua.VariantType) -> Value:
    """The raw value to write for engineering ``value``: the value itself when the tag is
    not scaled (a fraction for an integer node is then refused by :func:`coerce`, not
    rounded); else the inverse of scale/offset, rounded half away from zero for an integer
    node.  ValueError for text with a scale, a non-finite value or a zero scale."""
    if not scaled(config) or isinstance(value, str) or vtype is ua.VariantType.Boolean:
        return value
    raw = raw_number(config, value)
    return round_half_away(raw) if vtype in _INT_LIMITS else raw


class _Progress:
    """Set once the Write request may have left for the server."""

    sent = False


_UNCERTAIN_CODES = frozenset(
    int(code)
    for code in (
        StatusCodes.BadTimeout,
        StatusCodes.BadRequestTimeout,
        StatusCodes.BadCommunicationError,
        StatusCodes.BadConnectionClosed,
        StatusCodes.BadSecureChannelClosed,
        StatusCodes.BadServerHalted,
        StatusCodes.BadShutdown,
        StatusCodes.BadDisconnect,
        StatusCodes.BadRequestInterrupted,
        StatusCodes.BadNoCommunication,
    )
)
"""Answers that say the request's fate is unknown (it may have been applied): a write
that gets one is ``uncertain``, not ``failed``."""


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
        subscription_kind: type[BatchSubscription] | None = None,
    ) -> None:
        self.subscription_kind = subscription_kind or BatchSubscription
        """What ``fast_decode`` subscribes with (``fastsubscription.make_source`` passes the
        fast one)."""
        if config.pki_dir is None:  # the trust store lives with the rest of the state
            pki = (ctx.data_dir or Path(".isthmus")) / "pki"
            config = config.model_copy(update={"pki_dir": str(pki)})
        self.name = config.name
        self.config = config
        self.ctx = ctx
        self.tags = list(tags)
        self._tag_ids = np.array([t.tag_id for t in self.tags], dtype=np.int32)
        self._text_tag = np.array(
            [t.config.data_type is DataType.STRING for t in self.tags], dtype=np.bool_
        )
        self._items = plan_items([t.config for t in self.tags])
        # Handle h (the client handle of item h) → its tag's index; -1 for array items,
        # whose element tags are in _arrays.
        self._item_tag = np.array(
            [it.tags[0] if it.elements is None else -1 for it in self._items], dtype=np.intp
        )
        self._arrays: dict[int, tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] = {
            h: (np.array(it.tags, dtype=np.intp), np.array(it.elements, dtype=np.intp))
            for h, it in enumerate(self._items)
            if it.elements is not None
        }
        self._client: Any = None
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._link = Link("opcua", self.name, config.endpoint, self._tag_ids, ctx)
        # The gap mark: after an outage, a tag's first sample older than the Bad mark is
        # re-stamped just after it, so the historian records "Good again" after the gap.
        self._gap_ns: int | None = None
        self._gap_pending = np.zeros(len(self.tags), dtype=np.bool_)
        self._in_outage = False
        self._config_logged = False
        self._burst = ctx.burst_log(self.name)
        prefix = f"source.{self.name}"
        self._m_publishes = f"{prefix}.publishes"
        self._m_notifications = f"{prefix}.notifications"
        self._m_values = f"{prefix}.values"
        self._m_errors = f"{prefix}.errors"
        self._m_decode = f"{prefix}.decode_errors"
        self._m_array = f"{prefix}.array_errors"
        self._m_rejected = f"{prefix}.rejected_frames"
        self._m_writes = f"{prefix}.writes"
        self._m_write_errors = f"{prefix}.write_errors"
        self._by_path: dict[str, int] = {}
        for index, tag in enumerate(self.tags):
            self._by_path[tag.uns_path] = index
            self._by_path[tag.config.path] = index
        self._write_types: dict[int, ua.VariantType] = {}  # tag index → node's type
        self.server_info: dict[str, str] = {}
        """BuildInfo of the server (product_name, manufacturer_name, software_version,
        build_number, product_uri), read after each connect; empty before."""
        self.server_state: int | None = None
        """Last ServerStatus.State seen (0 Running); None before the first publish."""
        self._status_handle = len(self._items)  # client handle of the State item
        self._frame_reason = ""  # what the frame guard refused in this session, if any
        self.subscriptions: dict[str, float] = {}
        """Publishing interval (s) of each group's subscription, as the server revised
        it; filled at each (re)subscribe."""
        self.enum_labels: dict[int, dict[int, str]] = {}
        """Labels of the enumeration tags by tag id: the tag's ``enum`` from the config,
        else the node's EnumStrings/EnumValues read after subscribing."""
        for tag in self.tags:
            if tag.config.enum:
                self.enum_labels[tag.tag_id] = dict(tag.config.enum)

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
                except (
                    _ConnectionLost,
                    OSError,
                    TimeoutError,
                    ConnectionError,
                    UaError,
                    security.OpcUaSecurityError,
                ) as e:
                    await self._down(str(e) or type(e).__name__)
                except Exception as exc:  # a bug must not kill the source: log and retry
                    self.ctx.log.exception("opcua source %s: unexpected error", self.name)
                    await self._down(f"unexpected {type(exc).__name__}: {exc}")
                else:
                    backoff.reset()
                await self._teardown()
                await asyncio.sleep(backoff.next_delay())
        finally:
            await self._teardown()

    async def _down(self, reason: str) -> None:
        first = not self._in_outage  # Link emits the Bad batch on the first failure only
        self._in_outage = True
        await self._link.down(reason)
        if first:
            self._gap_ns = self.ctx.clock.now_ns()  # not before the Bad batch's stamp
            self._gap_pending[:] = True

    async def _session(self) -> None:
        """Connect, subscribe, then wait until the connection is lost."""
        # asyncua probes the server's state every watchdog interval with a timeout of at
        # most that interval (1 s by default): on a busy event loop (100k changes/s) the
        # probe missed its second and a healthy session was dropped.  The probe gets the
        # same patience as any other request.
        client = Client(
            self.config.endpoint,
            timeout=self.config.timeout,
            watchdog_intervall=max(1.0, self.config.timeout),
        )
        client.session_timeout = 600_000  # ms; the common server maximum, avoids a revision
        self._client = client
        self.server_state = None
        lost = asyncio.Event()
        self._lost = lost

        async def on_lost(exc: Exception) -> None:
            self._lost_reason = f"{type(exc).__name__}: {exc}"
            lost.set()

        client.connection_lost_callback = on_lost
        self._frame_reason = ""
        guard.install(client, self._on_rejected_frame)
        try:
            await asyncio.wait_for(security.apply(client, self.config), self.config.timeout * 2)
            await asyncio.wait_for(client.connect(), self.config.timeout)
        except (TimeoutError, OSError, UaError):
            if self._frame_reason:  # the real cause, rather than the timeout it led to
                raise guard.FrameRejected(f"server sent {self._frame_reason}") from None
            raise
        await asyncio.wait_for(self._read_build_info(client), self.config.timeout)
        subscribe_limit = self.config.timeout * (2 + len(self.config.groups))  # a few requests each
        await asyncio.wait_for(self._subscribe(client), subscribe_limit)
        self._link.up()
        self._in_outage = False
        await self._read_enums(client)
        await lost.wait()
        raise _ConnectionLost(self._lost_reason or "connection lost")

    async def _subscribe(self, client: Any) -> None:
        """One subscription per group (the default group first), then their items."""
        self.subscriptions = {}
        by_group: dict[str | None, list[int]] = {}
        for handle, item in enumerate(self._items):
            by_group.setdefault(item.group, []).append(handle)
        order: list[str | None] = [None, *(g.name for g in self.config.groups)]
        rejected: list[tuple[int, str]] = []
        status_pending = True
        for name in order:
            handles = by_group.get(name, [])
            if not handles and not (name is None and status_pending):
                continue
            group = self.config.group(name)
            sub = await self._new_subscription(client, group)
            requests: list[Any] = []
            usable = await self._check_percent(client, group, handles, rejected)
            for handle in usable:
                node = self._items[handle].node
                try:
                    node_id = ua.NodeId.from_string(node)
                except Exception as exc:
                    rejected.append((handle, f"{node!r}: {exc}"))
                    continue
                requests.append(self._item_request(node_id, handle, group))
            status_item = None
            if status_pending:
                status_pending = False
                status_item = self._item_request(
                    ua.NodeId.from_string(_SERVER_STATE),
                    self._status_handle,
                    SubscriptionGroup(name="status", sampling_interval=1.0, queue_size=1),
                )
                requests.append(status_item)
            if not requests:
                continue
            outcomes = await sub.create_monitored_items(requests)
            for request, outcome in zip(requests, outcomes, strict=True):
                if not isinstance(outcome, ua.StatusCode):
                    continue
                if request is status_item:
                    self.ctx.log.info(
                        "opcua source %s: server state not watchable (%s)",
                        self.name,
                        quality_name(outcome.value),
                    )
                    continue
                handle = request.RequestedParameters.ClientHandle
                reason = f"{self._items[handle].node}: {status_text(outcome.value)}"
                hint = _FILTER_REFUSED.get(int(outcome.value) & 0xFFFF0000)
                if hint is not None and group.deadband is not None:
                    reason += (
                        f" ({hint}: group {group.name} asks a {group.deadband.type} deadband "
                        f"of {group.deadband.value})"
                    )
                rejected.append((handle, reason))
        if rejected:
            await self._reject(rejected)

    async def _new_subscription(self, client: Any, group: SubscriptionGroup) -> Any:
        assert group.publishing_interval is not None
        period_ms = group.publishing_interval * 1000.0
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = period_ms
        params.RequestedLifetimeCount = 10000
        params.RequestedMaxKeepAliveCount = client.get_keepalive_count(period_ms)
        params.MaxNotificationsPerPublish = 0  # no limit: one response carries all changes
        params.PublishingEnabled = True
        params.Priority = 0
        kind = self.subscription_kind if self.config.fast_decode else BatchSubscription
        sub = kind(client.uaclient.session, params, self)
        result = await sub.init()
        revised = client.get_subscription_revised_params(params, result)
        if revised:
            await sub.update(revised)
        self.subscriptions[group.name] = float(result.RevisedPublishingInterval) / 1000.0
        return sub

    async def _check_percent(
        self,
        client: Any,
        group: SubscriptionGroup,
        handles: list[int],
        rejected: list[tuple[int, str]],
    ) -> list[int]:
        """A percent deadband is a percentage of the node's EURange: the items whose node
        has no EURange property are refused here, with the reason (some servers would
        silently send every change instead)."""
        if group.deadband is None or group.deadband.type != "percent" or not handles:
            return handles
        ids: list[Any] = []
        checked: list[int] = []
        usable: list[int] = []
        for handle in handles:
            try:
                ids.append(ua.NodeId.from_string(self._items[handle].node))
                checked.append(handle)
            except Exception:
                usable.append(handle)  # reported with the bad NodeId below
        try:
            ranges = await nodes.properties(client, ids, "EURange")
        except UaError as exc:  # e.g. no TranslateBrowsePaths: let the server decide
            self.ctx.log.info(
                "opcua source %s: EURange of group %s not checked (%s)", self.name, group.name, exc
            )
            return handles
        for handle, prop in zip(checked, ranges, strict=True):
            if prop is None:
                rejected.append(
                    (
                        handle,
                        f"{self._items[handle].node}: group {group.name} asks a percent "
                        "deadband, which needs an EURange property; the node has none "
                        "(use an absolute deadband, or another group)",
                    )
                )
            else:
                usable.append(handle)
        return usable

    def _item_request(self, node_id: Any, handle: int, group: SubscriptionGroup) -> Any:
        assert group.sampling_interval is not None and group.queue_size is not None
        read = ua.ReadValueId()
        read.NodeId = node_id
        read.AttributeId = AttributeIds.Value
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = group.sampling_interval * 1000.0
        params.QueueSize = group.queue_size
        params.DiscardOldest = True
        if group.deadband is not None:
            flt = ua.DataChangeFilter()
            flt.Trigger = ua.DataChangeTrigger.StatusValue
            flt.DeadbandType = _DEADBAND_TYPES[group.deadband.type]
            flt.DeadbandValue = group.deadband.value
            params.Filter = flt
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = read
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    async def _reject(self, rejected: list[tuple[int, str]]) -> None:
        """Items the server (or the percent check) refused: their tags Bad
        (configuration) once per subscribe, logged once."""
        if not self._config_logged:
            self._config_logged = True
            shown = "; ".join(reason for _, reason in rejected[:10])
            more = f" and {len(rejected) - 10} more" if len(rejected) > 10 else ""
            self.ctx.log.warning(
                "opcua source %s: %d item(s) cannot be subscribed: %s%s",
                self.name,
                len(rejected),
                shown,
                more,
            )
        tags = np.array([t for h, _ in rejected for t in self._items[h].tags], dtype=np.intp)
        n = len(tags)
        self.ctx.metrics.inc(self._m_errors, n)
        await self.ctx.emit(
            Batch(
                self._tag_ids[tags],
                np.full(n, self.ctx.clock.now_ns(), dtype=np.int64),
                np.full(n, np.nan, dtype=np.float64),
                np.full(n, Quality.BAD_CONFIGURATION_ERROR, dtype=np.uint32),
            )
        )

    async def _read_enums(self, client: Any) -> None:
        """Enumeration labels of the scalar tags' nodes, read once per connection (best
        effort: a server that cannot answer leaves the configured labels only)."""
        scalar = [i for i, t in enumerate(self.tags) if t.config.index is None]
        ids: list[Any] = []
        which: list[int] = []
        for i in scalar:
            with contextlib.suppress(Exception):
                ids.append(ua.NodeId.from_string(self.tags[i].config.node))
                which.append(i)
        if not ids:
            return
        try:
            found = await asyncio.wait_for(nodes.enum_labels(client, ids), self.config.timeout)
        except (TimeoutError, OSError, ConnectionError, UaError) as exc:
            self.ctx.log.info("opcua source %s: enumeration labels not read (%s)", self.name, exc)
            return
        for i, labels in zip(which, found, strict=True):
            tag = self.tags[i]
            if labels and not tag.config.enum:
                self.enum_labels[tag.tag_id] = labels

    def _on_rejected_frame(self, kind: str, text: str) -> None:
        self._frame_reason = text
        self.ctx.metrics.inc(self._m_rejected)
        self._burst.warning(
            f"rejected:{kind}",
            "opcua source %s: %s sent %s; connection dropped",
            self.name,
            self.config.endpoint,
            text,
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

    # -- server identity and state ------------------------------------------------------

    async def _read_build_info(self, client: Any) -> None:
        """BuildInfo once per connection; logged the first time and when it changes."""
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Neither
        for node in _BUILD_INFO.values():
            rv = ua.ReadValueId()
            rv.NodeId = ua.NodeId.from_string(node)
            rv.AttributeId = AttributeIds.Value
            params.NodesToRead.append(rv)
        try:
            results = await client.uaclient.read(params)
        except UaError as exc:  # a server without BuildInfo still serves its tags
            self.ctx.log.info("opcua source %s: no BuildInfo (%s)", self.name, exc)
            return
        info: dict[str, str] = {}
        for key, dv in zip(_BUILD_INFO, results, strict=True):
            value = dv.Value.Value if dv.Value is not None else None
            if value is not None and (dv.StatusCode is None or dv.StatusCode.is_good()):
                info[key] = str(value)
        if info != self.server_info:
            self.server_info = info
            self.ctx.log.info(
                "opcua source %s: server %s %s (build %s) by %s",
                self.name,
                info.get("product_name", "?"),
                info.get("software_version", "?"),
                info.get("build_number", "?"),
                info.get("manufacturer_name", "?"),
            )

    def _on_server_state(self, dv: Any) -> None:
        variant = dv.Value if dv is not None else None
        raw = variant.Value if variant is not None else None
        state = int(raw) if isinstance(raw, int) else None
        if state is None or state == self.server_state:
            return
        previous, self.server_state = self.server_state, state
        try:
            label = ua.ServerState(state).name
        except ValueError:
            label = str(state)
        if state != _RUNNING:
            self.ctx.log.warning(
                "opcua source %s: server state %s: its Good values are marked Uncertain",
                self.name,
                label,
            )
        elif previous is not None:
            self.ctx.log.info("opcua source %s: server Running again", self.name)

    # -- writes -------------------------------------------------------------------------

    def _tag_index(self, tag: str | int) -> int:
        if isinstance(tag, int):
            hits = np.flatnonzero(self._tag_ids == tag)
            if len(hits):
                return int(hits[0])
        elif tag in self._by_path:
            return self._by_path[tag]
        raise OpcUaWriteError(f"opcua source {self.name}: no tag {tag!r}")

    async def write(self, tag: str | int, value: float | int | bool | str) -> None:
        """Write the engineering ``value`` to a writable tag's node: inverse scale/offset
        (a scaled value for an integer node rounded half away from zero), converted to
        the node's DataType (read once per tag and cached; text for a String or
        LocalizedText node), one Write service call whose StatusCode is checked; never
        retried, not read back (:meth:`read_back` does that).  ``tag``: its UNS path, its
        path below the site, or its tag id.

        Raises :class:`OpcUaWriteError`: ``outcome`` ``failed`` when nothing was written
        (unknown or non-writable tag, a value that does not fit the node, not connected,
        a Bad StatusCode or service fault from the server), ``uncertain`` when the Write
        request was sent and then the connection dropped, no answer came in time, or the
        server answered with a timeout or communication status (``BadTimeout``...)."""
        index = self._tag_index(tag)
        bound = self.tags[index]
        node = bound.config.node
        label = f"opcua source {self.name}: write {bound.uns_path} ({node})"
        if not bound.config.writable:
            raise OpcUaWriteError(f"{label}: the tag is not writable (writable: false)")
        client = self._client
        if client is None or not self._link.connected:
            raise OpcUaWriteError(f"{label}: not connected to {self.config.endpoint}")
        try:
            node_id = ua.NodeId.from_string(node)
        except Exception as exc:
            raise OpcUaWriteError(f"{label}: bad NodeId: {exc}") from None
        progress = _Progress()
        try:
            async with asyncio.timeout(self.config.timeout * 3):
                await self._write(client, index, node_id, value, label, progress)
        except OpcUaWriteError:
            self.ctx.metrics.inc(self._m_write_errors)
            raise
        except (TimeoutError, OSError, UaError) as exc:
            self.ctx.metrics.inc(self._m_write_errors)
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                self._link.connected = False  # lost: the session is being torn down
            text = str(exc) or type(exc).__name__
            if progress.sent:
                raise OpcUaWriteError(
                    f"{label}: the Write was sent, then {text}: it may have been applied",
                    "uncertain",
                ) from None
            raise OpcUaWriteError(f"{label}: not written: {text}") from None
        self.ctx.metrics.inc(self._m_writes)

    async def _write(
        self,
        client: Any,
        index: int,
        node_id: Any,
        value: float | int | bool | str,
        label: str,
        progress: _Progress,
    ) -> None:
        vtype = self._write_types.get(index)
        if vtype is None:
            vtype = await self._node_type(client, node_id, label)
            self._write_types[index] = vtype
        config = self.tags[index].config
        try:
            coerced = coerce(to_node_raw(config, value, vtype), vtype)
        except ValueError as exc:
            raise OpcUaWriteError(f"{label}: {exc}") from None
        wv = ua.WriteValue()
        wv.NodeId = node_id
        wv.AttributeId = AttributeIds.Value
        wv.Value = ua.DataValue(ua.Variant(coerced, vtype))
        params = ua.WriteParameters()
        params.NodesToWrite = [wv]
        protocol = getattr(client.uaclient, "protocol", None)
        if protocol is None or getattr(protocol, "transport", None) is None:
            raise OpcUaWriteError(f"{label}: not connected to {self.config.endpoint}")
        progress.sent = True  # from here on the request may reach the server
        try:
            status = (await client.uaclient.write(params))[0]
        except UaStatusCodeError as exc:  # a service fault: the server refused the call
            code = int(getattr(exc, "code", 0))
            if (code & 0xFFFF0000) in _UNCERTAIN_CODES:
                raise
            raise OpcUaWriteError(f"{label}: refused by the server: {status_text(code)}") from None
        if not status.is_good():
            code = int(status.value)
            outcome: Outcome = "uncertain" if (code & 0xFFFF0000) in _UNCERTAIN_CODES else "failed"
            what = "answered" if outcome == "uncertain" else "refused by the server:"
            raise OpcUaWriteError(f"{label}: {what} {status_text(code)}", outcome)

    async def read_back(self, tag: str | int, timeout: float) -> Value | None:  # noqa: ASYNC109
        """The tag's engineering value now: a fresh Read service call of its node's Value
        attribute (not the subscription's last sample), scaled like a sample; ``None`` if
        the tag is unknown, not connected, the status is Bad or no answer within
        ``timeout`` seconds."""
        try:
            index = self._tag_index(tag)
        except OpcUaWriteError:
            return None
        bound = self.tags[index]
        client = self._client
        if client is None or not self._link.connected:
            return None
        label = f"opcua source {self.name}: read back {bound.uns_path}"
        try:
            node_id = ua.NodeId.from_string(bound.config.node)
            async with asyncio.timeout(timeout):
                dv = await self._read(client, node_id, AttributeIds.Value, label)
        except (
            OpcUaWriteError,
            TimeoutError,
            OSError,
            ConnectionError,
            UaError,
            ValueError,
        ) as exc:
            self.ctx.log.info("%s failed: %s", label, str(exc) or type(exc).__name__)
            return None
        raw = dv.Value.Value if dv.Value is not None else None
        if bound.config.index is not None:
            raw = (
                raw[bound.config.index]
                if isinstance(raw, list | tuple) and len(raw) > bound.config.index
                else None
            )
        if isinstance(raw, ua.LocalizedText):
            raw = raw.Text or ""
        if not isinstance(raw, bool | int | float | str):
            return None
        return engineering(bound.config, raw)

    async def _read(self, client: Any, node_id: Any, attribute: int, label: str) -> Any:
        rv = ua.ReadValueId()
        rv.NodeId = node_id
        rv.AttributeId = attribute
        params = ua.ReadParameters()
        params.NodesToRead = [rv]
        dv = (await client.uaclient.read(params))[0]
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            raise OpcUaWriteError(f"{label}: read failed: {status_text(dv.StatusCode.value)}")
        return dv

    async def _node_type(self, client: Any, node_id: Any, label: str) -> ua.VariantType:
        """The VariantType to write: the node's DataType when built-in, else the type
        of its current value (a subtype such as an enumeration stored as Int32)."""
        dv = await self._read(client, node_id, AttributeIds.DataType, label)
        type_id = dv.Value.Value if dv.Value is not None else None
        if (
            type_id is not None
            and type_id.NamespaceIndex == 0
            and isinstance(type_id.Identifier, int)
            and type_id.Identifier in _WRITABLE_TYPES
        ):
            return _WRITABLE_TYPES[type_id.Identifier]
        current = await self._read(client, node_id, AttributeIds.Value, label)
        vtype = current.Value.VariantType if current.Value is not None else None
        if vtype in _INT_LIMITS or vtype in (
            ua.VariantType.Boolean,
            ua.VariantType.Float,
            ua.VariantType.Double,
            ua.VariantType.String,
            ua.VariantType.LocalizedText,
        ):
            return ua.VariantType(vtype)
        raise OpcUaWriteError(f"{label}: node type {type_id} is not a number, a bool or text")

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
        handle_list: list[int] = []
        code_list: list[int] = []
        values: list[Any] = []
        stamps: list[datetime | None] = []
        status_handle = self._status_handle
        for item in items:
            handle = item.ClientHandle
            if handle == status_handle:
                self._on_server_state(item.Value)
                continue
            handle_list.append(handle)
            dv = item.Value
            variant = dv.Value
            values.append(None if variant is None else variant.Value)
            status = dv.StatusCode
            code_list.append(0 if status is None else status.value)
            stamps.append(dv.SourceTimestamp or dv.ServerTimestamp)
        n = len(handle_list)
        if n == 0:
            return None
        handles = np.array(handle_list, dtype=np.intp)
        codes = np.array(code_list, dtype=np.uint32)
        if self.server_state not in (None, _RUNNING):
            good = (codes & np.uint32(SEVERITY_MASK)) == 0
            codes[good] = Quality.UNCERTAIN

        metrics = self.ctx.metrics
        known = (handles >= 0) & (handles < len(self._item_tag))
        if not known.all():
            self._burst.warning(
                "handle", "opcua source %s: notification for unknown client handles", self.name
            )
        ts = self._timestamps(stamps)
        index = np.where(known, self._item_tag[np.where(known, handles, 0)], -1)
        scalar = index >= 0
        text: npt.NDArray[np.object_] | None
        if scalar.all():
            value, text = self._values(values, codes, index)
        else:
            keep = np.flatnonzero(scalar)
            parts_index = [index[keep]]
            parts_ts = [ts[keep]]
            parts_codes = [codes[keep]]
            scalar_value, text = self._values(
                [values[k] for k in keep], parts_codes[0], parts_index[0]
            )
            parts_value = [scalar_value]
            for k in np.flatnonzero(known & ~scalar):
                tags, elements = self._arrays[int(handles[k])]
                parts_index.append(tags)
                parts_ts.append(np.full(len(tags), ts[k], dtype=np.int64))
                element_value, element_codes = self._elements(values[k], int(codes[k]), elements)
                parts_value.append(element_value)
                parts_codes.append(element_codes)
            index = np.concatenate(parts_index)
            ts = np.concatenate(parts_ts)
            codes = np.concatenate(parts_codes)
            value = np.concatenate(parts_value)
            if text is not None:  # element tags are numeric: no text
                text = np.concatenate([text, np.full(len(value) - len(text), None, object)])
        if self._gap_ns is not None:
            self._close_gap(index, ts)
        batch = Batch(self._tag_ids[index], ts, value, codes, text=text)
        metrics.inc(self._m_publishes)
        metrics.inc(self._m_notifications, n)
        metrics.inc(self._m_values, int(np.count_nonzero(batch.quality == 0)))
        return batch

    def _values(
        self, values: list[Any], codes: npt.NDArray[np.uint32], index: npt.NDArray[np.intp]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.object_] | None]:
        """The value column of scalar rows (``index``: their tags) and, when a string
        tag is among them, the text column."""
        if set(map(type, values)) <= _NUMERIC and not self._text_tag[index].any():
            return np.array(values, dtype=np.float64), None
        return self._slow_values(values, codes, self._text_tag[index])

    def _elements(
        self, raw: Any, code: int, elements: npt.NDArray[np.intp]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint32]]:
        """The element tags of one array notification: the server's status for each
        element present, ``BAD_OUT_OF_RANGE`` past the end of a short array,
        ``BAD_DECODING_ERROR`` for elements that are not numbers."""
        m = len(elements)
        out = np.full(m, np.nan, dtype=np.float64)
        codes = np.full(m, code, dtype=np.uint32)
        if raw is None and code & 0x80000000:
            return out, codes  # a Bad sample without a value: the server's status
        if isinstance(raw, bytes | bytearray):
            seq: list[Any] = list(raw)
        elif isinstance(raw, list | tuple):
            seq = list(raw)
        elif type(raw) in _NUMERIC:
            seq = [raw]  # ValueRank ScalarOrOneDimension: a one-element array
        else:
            seq = []
            codes[:] = Quality.BAD_DECODING_ERROR
            self._count_array_errors(m, "array", f"not an array: {raw!r:.40}")
            return out, codes
        present = elements < len(seq)
        if set(map(type, seq)) <= _NUMERIC:
            array = np.array(seq, dtype=np.float64)
            out[present] = array[elements[present]]
        else:
            for j in np.flatnonzero(present):
                v = seq[int(elements[j])]
                if type(v) in _NUMERIC:
                    out[j] = v
                else:
                    codes[j] = Quality.BAD_DECODING_ERROR
                    self._count_array_errors(1, "array", f"non-numeric element {v!r:.40}")
        short = int(m - np.count_nonzero(present))
        if short:
            codes[~present] = Quality.BAD_OUT_OF_RANGE
            self._count_array_errors(
                short,
                "array",
                f"array of {len(seq)} element(s), index {int(elements.max())} configured",
            )
        return out, codes

    def _count_array_errors(self, n: int, key: str, text: str) -> None:
        self.ctx.metrics.inc(self._m_array, n)
        self.ctx.metrics.inc(self._m_errors, n)
        self._burst.warning(key, "opcua source %s: %s: element tags Bad", self.name, text)

    def _close_gap(self, index: npt.NDArray[np.intp], ts: npt.NDArray[np.int64]) -> None:
        """First samples after an outage: those stamped before the Bad mark (the value
        did not change while we were away) are stamped just after it, in place."""
        assert self._gap_ns is not None
        pending = self._gap_pending[index]
        if pending.any():
            floor = np.int64(self._gap_ns + 1)
            ts[pending & (ts < floor)] = floor
            self._gap_pending[index[pending]] = False
        if not self._gap_pending.any():
            self._gap_ns = None

    def _timestamps(self, stamps: list[datetime | None]) -> npt.NDArray[np.int64]:
        try:
            return np.array([_to_ns(s) for s in stamps], dtype=np.int64)  # type: ignore[arg-type]
        except (TypeError, AttributeError, OverflowError):
            now = self.ctx.clock.now_ns()
            return np.array([now if s is None else _to_ns(s) for s in stamps], dtype=np.int64)

    def _slow_values(
        self,
        values: list[Any],
        codes: npt.NDArray[np.uint32],
        is_text: npt.NDArray[np.bool_],
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.object_] | None]:
        """Values with non-numbers or string tags: a string tag's String (LocalizedText:
        its text; null: empty) goes to the text column; other non-numbers, and
        anything but text for a string tag, become BAD_DECODING_ERROR (in ``codes``)."""
        out = np.full(len(values), np.nan, dtype=np.float64)
        text: npt.NDArray[np.object_] | None = None
        if is_text.any():
            text = np.full(len(values), None, dtype=object)
        bad = 0
        for i, v in enumerate(values):
            if is_text[i]:
                assert text is not None
                if isinstance(v, str):
                    text[i] = v
                elif isinstance(v, ua.LocalizedText):
                    text[i] = v.Text or ""
                elif v is None:
                    if not codes[i] & 0x80000000:
                        text[i] = ""  # a null String
                else:
                    codes[i] = Quality.BAD_DECODING_ERROR
                    bad += 1
                    self._burst.warning(
                        "decode-text",
                        "opcua source %s: a string tag received %s %.40r, not a String or "
                        "LocalizedText: Bad_DecodingError",
                        self.name,
                        "a ByteString" if isinstance(v, bytes) else type(v).__name__,
                        v,
                    )
            elif type(v) in _NUMERIC:
                out[i] = v
            elif v is None and codes[i] & 0x80000000:
                continue  # a Bad sample without a value: keep the server's status
            elif isinstance(v, list | tuple | bytes | bytearray):
                codes[i] = Quality.BAD_DECODING_ERROR
                bad += 1
                self._burst.warning(
                    "decode",
                    "opcua source %s: an array where a scalar is configured (set index or "
                    "array_length on the tag): Bad_DecodingError",
                    self.name,
                )
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
        return out, text
