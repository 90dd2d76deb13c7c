"""Property tests of the fast PublishResponse decoder against asyncua's own codec.

Messages are built with asyncua's encoder (``struct_to_binary``); the fast decoder must
give exactly what asyncua's decoder gives, or ``None`` — and it must give columns for
every message made only of what it claims to handle.  Random and mutated bytes never
make it raise.  A nightly run scales the fuzz with ``ISTHMUS_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.connectors.opcua.fastpublish import ABSENT, FastPublish, decode

FUZZ_EXAMPLES = int(os.environ.get("ISTHMUS_FUZZ_EXAMPLES", "300"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

NUMERIC = {
    ua.VariantType.Boolean: st.booleans(),
    ua.VariantType.SByte: st.integers(-(2**7), 2**7 - 1),
    ua.VariantType.Byte: st.integers(0, 2**8 - 1),
    ua.VariantType.Int16: st.integers(-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: st.integers(0, 2**16 - 1),
    ua.VariantType.Int32: st.integers(-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: st.integers(0, 2**32 - 1),
    ua.VariantType.Int64: st.integers(-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: st.integers(0, 2**64 - 1),
    ua.VariantType.Float: st.floats(width=32, allow_nan=True),
    ua.VariantType.Double: st.floats(allow_nan=True),
}
# Timestamps the fast path takes (int64 ns) and some it must refuse.
IN_RANGE = st.datetimes(datetime(1700, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC))
OUT_OF_RANGE = st.sampled_from(
    [
        datetime(1601, 1, 2, tzinfo=UTC),
        datetime(1650, 1, 1, tzinfo=UTC),
        datetime(2300, 1, 1, tzinfo=UTC),
    ]
)


@dataclass
class Built:
    body: bytes
    fast_expected: bool
    """Made only of what the fast path claims to handle: it must not return None."""


@st.composite
def data_values(draw: st.DrawFn) -> tuple[Any, bool]:
    ok = True
    kind = draw(st.sampled_from(["numeric"] * 8 + ["string", "array", "null", "novalue"]))
    if kind == "numeric":
        vtype = draw(st.sampled_from(list(NUMERIC)))
        variant: Any = ua.Variant(draw(NUMERIC[vtype]), vtype)
    elif kind == "string":
        variant, ok = ua.Variant(draw(st.text(max_size=5)), ua.VariantType.String), False
    elif kind == "array":
        values = draw(st.lists(st.floats(allow_nan=False), max_size=3))
        variant, ok = ua.Variant(values, ua.VariantType.Double, is_array=True), False
    elif kind == "null":
        variant = ua.Variant(None, ua.VariantType.Null)
    else:
        variant = None
    dv: Any = ua.DataValue(variant) if variant is not None else ua.DataValue()
    if kind == "novalue":
        dv.Value = None
    dv.StatusCode = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1).map(_status)))
    stamps: list[datetime | None] = []
    for _ in range(2):
        which = draw(st.sampled_from(["none", "in", "in", "out"]))
        if which == "none":
            stamps.append(None)
        elif which == "in":
            stamps.append(draw(IN_RANGE))
        else:
            stamps.append(draw(OUT_OF_RANGE))
            ok = False
    dv.SourceTimestamp, dv.ServerTimestamp = stamps
    dv.SourcePicoseconds = draw(st.one_of(st.none(), st.integers(0, 9999)))
    dv.ServerPicoseconds = draw(st.one_of(st.none(), st.integers(0, 9999)))
    if dv.SourcePicoseconds is not None and dv.ServerTimestamp is not None:
        ok = False  # asyncua and the spec order these fields differently: refused
    return dv, ok


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


@st.composite
def data_changes(draw: st.DrawFn, uniform: bool) -> tuple[Any, bool]:
    n = draw(st.integers(0, 12))
    items = []
    ok = True
    if uniform and n:  # one layout for every item: the record-view path
        vtype = draw(st.sampled_from(list(NUMERIC)))
        status = draw(st.booleans())
        src, srv = draw(st.booleans()), draw(st.booleans())
        for _ in range(n):
            dv: Any = ua.DataValue(ua.Variant(draw(NUMERIC[vtype]), vtype))
            dv.StatusCode = _status(draw(st.integers(0, 2**32 - 1))) if status else None
            dv.SourceTimestamp = draw(IN_RANGE) if src else None
            dv.ServerTimestamp = draw(IN_RANGE) if srv else None
            items.append(ua.MonitoredItemNotification(draw(st.integers(0, 2**32 - 1)), dv))
    else:
        for _ in range(n):
            dv, item_ok = draw(data_values())
            ok = ok and item_ok
            items.append(ua.MonitoredItemNotification(draw(st.integers(0, 2**32 - 1)), dv))
    notification: Any = ua.DataChangeNotification(MonitoredItems=items)
    if draw(st.integers(0, 9)) == 0:
        notification.DiagnosticInfos = [ua.DiagnosticInfo(SymbolicId=ua.Int32(1))]
        ok = False
    return notification, ok


@st.composite
def publish_responses(draw: st.DrawFn) -> Built:
    notifications: list[Any] = []
    ok = True
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["uniform", "uniform", "mixed", "status"]))
        if kind == "status":
            notifications.append(ua.StatusChangeNotification(Status=_status(0x80AB0000)))
            ok = False
        else:
            notification, dc_ok = draw(data_changes(kind == "uniform"))
            notifications.append(notification)
            ok = ok and dc_ok
    if not notifications:
        ok = False  # a keep-alive: asyncua's cheap decode
    message = ua.NotificationMessage(
        SequenceNumber=draw(st.integers(0, 2**32 - 1)),
        PublishTime=draw(IN_RANGE),
        NotificationData=notifications,
    )
    result = ua.PublishResult(
        SubscriptionId=draw(st.integers(0, 2**32 - 1)),
        AvailableSequenceNumbers=draw(st.lists(st.integers(0, 2**32 - 1), max_size=4)),
        MoreNotifications=draw(st.booleans()),
        NotificationMessage=message,
        Results=[_status(c) for c in draw(st.lists(st.integers(0, 2**32 - 1), max_size=3))],
    )
    response = ua.PublishResponse(Parameters=result)
    response.ResponseHeader.RequestHandle = draw(st.integers(0, 2**32 - 1))
    if draw(st.integers(0, 9)) == 0:
        response.ResponseHeader.ServiceResult = _status(0x80010000)
        ok = False
    return Built(struct_to_binary(response), ok)


def _ns(stamp: datetime | None) -> int:
    if stamp is None:
        return ABSENT
    return ((stamp - _EPOCH) // _US) * 1000


def _us(ns: np.ndarray[Any, Any]) -> list[int]:
    return [int(x) if x == ABSENT else int(x) // 1000 * 1000 for x in ns]


def assert_same(fast: FastPublish, body: bytes) -> None:
    """The fast columns are what asyncua's decoder makes of the same bytes."""
    slow = struct_from_binary(ua.PublishResponse, Buffer(body))
    params = slow.Parameters
    assert fast.subscription_id == params.SubscriptionId
    assert fast.available_sequence_numbers == list(params.AvailableSequenceNumbers)
    assert fast.more_notifications == params.MoreNotifications
    assert fast.sequence_number == params.NotificationMessage.SequenceNumber
    assert fast.request_handle == slow.ResponseHeader.RequestHandle
    assert fast.results == [s.value for s in params.Results]
    assert ua.win_epoch_to_datetime(fast.publish_ticks) == params.NotificationMessage.PublishTime
    data = params.NotificationMessage.NotificationData
    assert fast.notifications == len(data)
    items = [item for n in data for item in n.MonitoredItems]
    c = fast.changes
    assert len(c) == len(items)
    assert c.client_handle.tolist() == [i.ClientHandle for i in items]
    expected = np.array(
        [np.nan if i.Value.Value.Value is None else float(i.Value.Value.Value) for i in items],
        dtype=np.float64,
    )
    np.testing.assert_array_equal(c.value, expected)  # NaN where NaN
    assert c.variant_type.tolist() == [i.Value.Value.VariantType.value for i in items]
    statuses = [0 if i.Value.StatusCode is None else i.Value.StatusCode.value for i in items]
    assert c.status.tolist() == statuses
    assert _us(c.source_ts) == [_ns(i.Value.SourceTimestamp) for i in items]
    assert _us(c.server_ts) == [_ns(i.Value.ServerTimestamp) for i in items]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(publish_responses())
def test_fast_decoder_matches_asyncua_or_declines(built: Built) -> None:
    fast = decode(built.body)
    if built.fast_expected:
        assert fast is not None, "a message of numeric scalar data changes was declined"
    if fast is not None:
        assert_same(fast, built.body)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(body: bytes) -> None:
    fast = decode(body)
    assert fast is None or isinstance(fast, FastPublish)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(publish_responses(), st.data())
def test_mutated_messages_never_raise_and_agree(built: Built, data: st.DataObject) -> None:
    """Flipped bytes, truncation, appended bytes: never an exception; whatever the fast
    decoder still accepts, asyncua decodes to the same values."""
    body = bytearray(built.body)
    how = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    if how == "flip" and body:
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(body) - 1))
            body[at] = data.draw(st.integers(0, 255))
    elif how == "truncate":
        body = body[: data.draw(st.integers(0, len(body)))]
    else:
        body += data.draw(st.binary(min_size=1, max_size=8))
    fast = decode(bytes(body))
    if fast is not None:
        assert_same(fast, bytes(body))


def test_uniform_record_view_and_loop_agree() -> None:
    """Many items of one layout (the record view) and the same items with one different
    layout in the middle (the loop) give the same columns for the shared rows."""
    stamp = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
    items = []
    for k in range(500):
        dv: Any = ua.DataValue(ua.Variant(k * 0.5, ua.VariantType.Double))
        dv.StatusCode = None
        dv.SourceTimestamp = stamp + timedelta(microseconds=k)
        items.append(ua.MonitoredItemNotification(k, dv))
    odd = ua.DataValue(ua.Variant(7, ua.VariantType.Int32))
    odd.StatusCode = _status(0x40000000)
    mixed = [*items[:250], ua.MonitoredItemNotification(9999, odd), *items[250:]]

    def body(monitored: list[Any]) -> bytes:
        message = ua.NotificationMessage(
            SequenceNumber=3,
            NotificationData=[ua.DataChangeNotification(MonitoredItems=monitored)],
        )
        response = ua.PublishResponse(Parameters=ua.PublishResult(7, NotificationMessage=message))
        return struct_to_binary(response)

    uniform_body, mixed_body = body(items), body(mixed)
    uniform = decode(uniform_body)
    loop = decode(mixed_body)
    assert uniform is not None and loop is not None
    assert_same(uniform, uniform_body)
    assert_same(loop, mixed_body)
    keep = np.r_[0:250, 251:501]
    np.testing.assert_array_equal(loop.changes.value[keep], uniform.changes.value)
    np.testing.assert_array_equal(loop.changes.source_ts[keep], uniform.changes.source_ts)
    assert loop.changes.status[250] == 0x40000000


def test_100ns_ticks_kept() -> None:
    """The columns keep the DateTime's 100 ns ticks (asyncua's datetime keeps µs)."""
    dv: Any = ua.DataValue(ua.Variant(1.0, ua.VariantType.Double))
    dv.StatusCode = None
    dv.SourceTimestamp = datetime(2026, 1, 1, tzinfo=UTC)
    message = ua.NotificationMessage(
        SequenceNumber=1,
        NotificationData=[
            ua.DataChangeNotification(MonitoredItems=[ua.MonitoredItemNotification(1, dv)])
        ],
    )
    raw = bytearray(
        struct_to_binary(
            ua.PublishResponse(Parameters=ua.PublishResult(1, NotificationMessage=message))
        )
    )
    ticks = ua.datetime_to_win_epoch(dv.SourceTimestamp)
    at = raw.find(struct.pack("<q", ticks))
    raw[at : at + 8] = struct.pack("<q", ticks + 7)
    fast = decode(bytes(raw))
    assert fast is not None
    expected = (dv.SourceTimestamp - _EPOCH) // _US * 1000 + 700
    assert fast.changes.source_ts.tolist() == [expected]


# -- the batch built from the columns is the batch built from asyncua's objects ----------


def _source() -> Any:
    from isthmus.connectors.base import BoundTag, SourceContext
    from isthmus.connectors.opcua.config import OpcUaSourceConfig
    from isthmus.connectors.opcua.source import OpcUaSource
    from isthmus.model.clock import ManualClock

    tags: list[dict[str, Any]] = [
        {"path": f"a/l/c/e/n{i}", "node": f"ns=2;s=N{i}"} for i in range(5)
    ]
    tags.append({"path": "a/l/c/e/text", "node": "ns=2;s=T", "data_type": "string"})
    tags.append({"path": "a/l/c/e/arr", "node": "ns=2;s=A", "array_length": 2})
    config = OpcUaSourceConfig.model_validate(
        {"name": "p", "endpoint": "opc.tcp://127.0.0.1:1/", "tags": tags}
    )
    bound = [BoundTag(100 + i, t.path, t) for i, t in enumerate(config.tags)]

    async def emit(batch: Any) -> None:
        return None

    return OpcUaSource(config, bound, SourceContext(emit=emit, clock=ManualClock()))


@st.composite
def source_messages(draw: st.DrawFn) -> tuple[bytes, Any, int | None, list[bool] | None]:
    n_handles = len(_source()._items) + 2  # + the ServerState item + an unknown handle
    items = []
    for _ in range(draw(st.integers(0, 10))):
        handle = draw(st.integers(0, n_handles - 1))
        if handle == n_handles - 2:  # ServerState: an Int32 enumeration
            dv: Any = ua.DataValue(ua.Variant(draw(st.integers(0, 2)), ua.VariantType.Int32))
        elif draw(st.integers(0, 5)) == 0:
            dv = ua.DataValue()
            dv.Value = None
        else:
            vtype = draw(st.sampled_from(list(NUMERIC)))
            dv = ua.DataValue(ua.Variant(draw(NUMERIC[vtype]), vtype))
        dv.StatusCode = draw(
            st.sampled_from([None, _status(0), _status(0x40000000), _status(0x808C0000)])
        )
        dv.SourceTimestamp = draw(st.one_of(st.none(), IN_RANGE))
        dv.ServerTimestamp = draw(st.one_of(st.none(), IN_RANGE))
        items.append(ua.MonitoredItemNotification(handle, dv))
    message = ua.NotificationMessage(
        SequenceNumber=1, NotificationData=[ua.DataChangeNotification(MonitoredItems=items)]
    )
    body = struct_to_binary(
        ua.PublishResponse(Parameters=ua.PublishResult(1, NotificationMessage=message))
    )
    state = draw(st.sampled_from([None, 0, 1]))
    gap = draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=8, max_size=8)))
    return body, items, state, gap


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source_messages(), st.data())
def test_batch_from_columns_is_the_batch_from_asyncua_objects(
    case: tuple[bytes, Any, int | None, list[bool] | None], data: st.DataObject
) -> None:
    from isthmus.connectors.opcua.fastsubscription import batch_of_changes

    body, _, state, gap = case
    fast = decode(body)
    assert fast is not None
    slow_items = struct_from_binary(ua.PublishResponse, Buffer(body))
    items = slow_items.Parameters.NotificationMessage.NotificationData[0].MonitoredItems
    # Sub-microsecond ticks (asyncua's encoder writes whole microseconds): the same
    # extra 100 ns ticks on both sides; asyncua's datetimes drop them.
    c = fast.changes
    for k, item in enumerate(items):
        extra = data.draw(st.integers(0, 9))
        for column, name in ((c.source_ts, "SourceTimestamp"), (c.server_ts, "ServerTimestamp")):
            stamp = getattr(item.Value, name)
            if stamp is not None:
                column[k] += extra * 100
                ticks = ua.datetime_to_win_epoch(stamp) + extra
                setattr(item.Value, name, ua.win_epoch_to_datetime(ticks))
    sources = [_source(), _source()]
    for s in sources:
        s.server_state = state
        if gap is not None:
            s._gap_ns = 1_800_000_000_000_000_000
            s._gap_pending[:] = gap
    got = batch_of_changes(sources[0], fast.changes)
    want = sources[1].batch_of(items)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert got.tag_id.tolist() == want.tag_id.tolist()
        assert got.ts.tolist() == want.ts.tolist()
        np.testing.assert_array_equal(got.value, want.value)
        assert got.quality.tolist() == want.quality.tolist()
        assert (got.text is None) == (want.text is None)
        if got.text is not None and want.text is not None:
            assert got.text.tolist() == want.text.tolist()
    assert sources[0].server_state == sources[1].server_state
    assert sources[0]._gap_ns == sources[1]._gap_ns
    assert sources[0]._gap_pending.tolist() == sources[1]._gap_pending.tolist()
    assert sources[0].ctx.metrics.snapshot() == sources[1].ctx.metrics.snapshot()
