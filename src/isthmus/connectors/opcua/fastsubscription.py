"""The fast publish path: PublishResponses decoded by :mod:`.fastpublish` into one batch.

**Relies on asyncua internals** (checked for asyncua 2.1): the session's publish loop
(``UaSession._publish_loop``) calls ``session.publish(acks)``, which sends the
PublishRequest with ``session._send_request`` and decodes the reply with
``struct_from_binary(ua.PublishResponse, ...)``; the loop then reads only
``Parameters.SubscriptionId``, ``NotificationMessage.SequenceNumber`` and whether
``NotificationData`` is empty (to acknowledge), and calls the subscription's
``publish_callback`` registered in ``session._subscription_callbacks``.

:func:`install` replaces ``publish`` on one session object (not the class): same
request, then :func:`~.fastpublish.decode` of the reply bytes; when it yields columns
and the subscription is a :class:`FastBatchSubscription`, the response handed to the
loop is a ``ua.PublishResponse`` whose one notification is a :class:`FastDataChange`
(so acknowledgements, sequence numbers, keep-alives and the loop's own error handling
are untouched); otherwise asyncua decodes the bytes exactly as before.  Republish is
not involved (asyncua's client never calls it on its own).  On another asyncua
version, or if those internals are missing, :func:`supported` is false and nothing is
installed (logged once): the source runs on asyncua's decoder.

:func:`batch_of_changes` turns the columns into the batch
:meth:`OpcUaSource.batch_of` would build from asyncua's objects: same tag ids,
values, qualities, timestamps (microsecond resolution, as asyncua's datetimes), gap
closing, server-state handling and metrics.  Rows it cannot do in NumPy (a client
handle of an array item, a string tag, an unknown handle) go through ``batch_of`` with
asyncua objects rebuilt from the columns, so even those match.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.client.ua_session import UaSession
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaStructParsingError

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua import fastpublish
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastpublish import ABSENT, DataChanges, FastPublish
from isthmus.connectors.opcua.source import BatchSubscription, OpcUaSource
from isthmus.model.batch import Batch
from isthmus.model.quality import SEVERITY_MASK, Quality

log = logging.getLogger(__name__)

TESTED_ASYNCUA = ("2.1.",)
"""asyncua versions whose session internals the hook was checked against."""
_RUNNING = 0
_INTEGER_TYPES = frozenset(range(2, 10))
_warned = False


def supported() -> bool:
    """True if this asyncua has the internals the fast path relies on."""
    try:
        installed = version("asyncua")
    except PackageNotFoundError:
        return False
    return (
        installed.startswith(TESTED_ASYNCUA)
        and callable(getattr(UaSession, "publish", None))
        and callable(getattr(UaSession, "_send_request", None))
        and callable(getattr(UaSession, "_publish_loop", None))
        and hasattr(ua, "PublishResponse")
    )


class FastDataChange(ua.DataChangeNotification):
    """A DataChangeNotification whose items stay as columns (``changes``); its
    ``MonitoredItems`` list is empty."""

    def __init__(self, changes: DataChanges) -> None:
        super().__init__()
        self.changes = changes


def _response(fast: FastPublish) -> Any:
    """The ua.PublishResponse the publish loop needs, around the columns."""
    header = ua.ResponseHeader(
        Timestamp=ua.win_epoch_to_datetime(fast.response_ticks),
        RequestHandle=fast.request_handle,
    )
    message = ua.NotificationMessage(
        SequenceNumber=fast.sequence_number,
        PublishTime=ua.win_epoch_to_datetime(fast.publish_ticks),
        NotificationData=[FastDataChange(fast.changes)],
    )
    result = ua.PublishResult(
        SubscriptionId=fast.subscription_id,
        AvailableSequenceNumbers=fast.available_sequence_numbers,
        MoreNotifications=fast.more_notifications,
        NotificationMessage=message,
        Results=[ua.StatusCode(ua.UInt32(code)) for code in fast.results],
        DiagnosticInfos=[],
    )
    return ua.PublishResponse(ResponseHeader=header, Parameters=result)


def install(session: Any) -> bool:
    """Give ``session`` (a UaSession) the fast publish decoder; idempotent.  False (and
    nothing changed) when this asyncua is not one the hook was checked against."""
    global _warned
    if getattr(session, "_isthmus_fast_publish", False):
        return True
    if not supported() or not isinstance(session, UaSession):
        if not _warned:
            _warned = True
            log.warning(
                "opcua: fast publish decoding disabled (asyncua %s not in %s); "
                "asyncua decodes every publish response",
                _asyncua_version(),
                TESTED_ASYNCUA,
            )
        return False

    async def publish(acks: list[Any]) -> Any:
        # Same request as UaSession.publish; only the decoding differs.
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        data = await session._send_request(request, timeout=0)
        fast = fastpublish.decode(data.copy().read(len(data)))
        if fast is not None:
            callback = session._subscription_callbacks.get(fast.subscription_id)
            if isinstance(getattr(callback, "__self__", None), FastBatchSubscription):
                return _response(fast)
        try:
            return struct_from_binary(ua.PublishResponse, data)
        except Exception as ex:
            session.logger.exception("Error parsing notification from server")
            raise UaStructParsingError from ex

    target: Any = session  # an instance attribute shadows the method, for this session only
    target.publish = publish
    target._isthmus_fast_publish = True
    return True


def _asyncua_version() -> str:
    try:
        return version("asyncua")
    except PackageNotFoundError:
        return "?"


class FastBatchSubscription(BatchSubscription):
    """A :class:`BatchSubscription` whose session decodes numeric data changes fast;
    counts the publish responses decoded so in ``source.<name>.fast_decoded``."""

    def __init__(self, session: Any, params: Any, source: OpcUaSource) -> None:
        super().__init__(session, params, source)
        self.fast = install(session)
        self._m_fast = f"source.{source.name}.fast_decoded"

    async def publish_callback(self, publish_result: Any) -> None:
        message = publish_result.NotificationMessage
        data = message.NotificationData
        if data and isinstance(data[0], FastDataChange):
            self.last_publish_at = time.monotonic()
            self.last_sequence_number = int(message.SequenceNumber)
            self._source.ctx.metrics.inc(self._m_fast)
            batch = batch_of_changes(self._source, data[0].changes)
            if batch is not None:
                await self._source.ctx.emit(batch)
            return
        await super().publish_callback(publish_result)


def _datetime(ns: int) -> ua.DateTime | None:
    if ns == ABSENT:
        return None
    stamp: Any = ua.win_epoch_to_datetime(ns // 100 + fastpublish.EPOCH_TICKS)
    return stamp  # type: ignore[no-any-return]


def _python_value(value: float, vtype: int) -> float | int | bool | None:
    if vtype == fastpublish.NULL:
        return None
    if vtype == fastpublish.BOOLEAN:
        return bool(value)
    if vtype in _INTEGER_TYPES:
        return int(value)
    return float(value)


def _items(changes: DataChanges) -> list[Any]:
    """asyncua MonitoredItemNotifications rebuilt from columns (the rare rows)."""
    items = []
    for k in range(len(changes)):
        vtype = int(changes.variant_type[k])
        dv = ua.DataValue(
            ua.Variant(_python_value(float(changes.value[k]), vtype), ua.VariantType(vtype)),
            ua.StatusCode(ua.UInt32(int(changes.status[k]))),
            SourceTimestamp=_datetime(int(changes.source_ts[k])),
            ServerTimestamp=_datetime(int(changes.server_ts[k])),
        )
        handle = int(changes.client_handle[k])
        items.append(ua.MonitoredItemNotification(ClientHandle=handle, Value=dv))
    return items


def batch_of_changes(source: OpcUaSource, changes: DataChanges) -> Batch | None:
    """The batch :meth:`OpcUaSource.batch_of` builds for the same notifications."""
    status_rows = changes.client_handle == source._status_handle
    if status_rows.any():  # ServerState changes, in order, as batch_of does
        for k in np.flatnonzero(status_rows):
            source._on_server_state(_items(changes.take(np.array([k])))[0].Value)
        changes = changes.take(~status_rows)
    handles = changes.client_handle.astype(np.intp)
    n_items = len(source._item_tag)
    index = np.full(len(handles), -1, dtype=np.intp)
    known = handles < n_items
    index[known] = source._item_tag[handles[known]]
    plain = index >= 0
    # A row without a value is only plain when Bad (NaN, the server's status kept).
    novalue = changes.variant_type == fastpublish.NULL
    unexplained = novalue & ((changes.status & np.uint32(0x80000000)) == 0)
    if not plain.all() or source._text_tag[index].any() or unexplained.any():
        return source.batch_of(_items(changes))  # rare rows: the asyncua-object path
    n = len(handles)
    if n == 0:
        return None
    codes = changes.status.copy()
    if source.server_state not in (None, _RUNNING):
        good = (codes & np.uint32(SEVERITY_MASK)) == 0
        codes[good] = Quality.UNCERTAIN
    stamped = np.where(changes.source_ts != ABSENT, changes.source_ts, changes.server_ts)
    ts = (stamped // 1000) * 1000  # asyncua's datetimes carry microseconds
    missing = stamped == ABSENT
    if missing.any():
        ts[missing] = source.ctx.clock.now_ns()
    if source._gap_ns is not None:
        source._close_gap(index, ts)
    batch = Batch(source._tag_ids[index], ts, changes.value, codes)
    metrics = source.ctx.metrics
    metrics.inc(source._m_publishes)
    metrics.inc(source._m_notifications, n)
    metrics.inc(source._m_values, int(np.count_nonzero(batch.quality == 0)))
    return batch


def make_source(
    config: OpcUaSourceConfig, tags: Sequence[BoundTag[OpcUaTagConfig]], ctx: SourceContext
) -> OpcUaSource:
    """An OPC UA source whose subscriptions decode numeric data changes fast when its
    ``fast_decode`` is on (the default)."""
    return OpcUaSource(config, tags, ctx, subscription_kind=FastBatchSubscription)
