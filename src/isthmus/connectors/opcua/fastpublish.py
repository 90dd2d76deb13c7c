"""A fixed-layout decoder for OPC UA PublishResponses that carry numeric data changes (pure).

asyncua decodes every ``MonitoredItemNotification`` into a dataclass, a ``DataValue``,
a ``Variant`` and datetimes: 6-10 µs per change, most of our connector's CPU.  This
module reads the same bytes (OPC UA Binary, Part 6) straight into NumPy columns, for
the one shape a data-collection client sees all day: a ``PublishResponse`` whose
``NotificationData`` are only ``DataChangeNotification``s of scalar numeric Variants
(Boolean, SByte ... UInt64, Float, Double), null Variants or no value at all (a Bad
sample without a value).

:func:`decode` returns ``None`` — "let asyncua decode it" — for anything else or
anything it is not sure of: events, status changes, strings, arrays, extension
objects, diagnostics, a string table or additional header, a Bad service result, a
timestamp outside the range of int64 nanoseconds, trailing bytes, a truncated message.
It never raises on any input.

Layout (Part 6 §5.2, Part 4 §5.13.5/§7.25/§7.26)::

    PublishResponse = TypeId(NodeId i=829) ResponseHeader PublishResult
    ResponseHeader  = Timestamp(i64) RequestHandle(u32) ServiceResult(u32)
                      ServiceDiagnostics(DiagnosticInfo) StringTable(String[])
                      AdditionalHeader(ExtensionObject)
    PublishResult   = SubscriptionId(u32) AvailableSequenceNumbers(u32[])
                      MoreNotifications(bool) NotificationMessage
                      Results(StatusCode[]) DiagnosticInfos(DiagnosticInfo[])
    NotificationMessage = SequenceNumber(u32) PublishTime(i64) NotificationData(ExtObj[])
    DataChangeNotification (i=811) = MonitoredItems(MonitoredItemNotification[])
                                     DiagnosticInfos(DiagnosticInfo[])
    MonitoredItemNotification = ClientHandle(u32) DataValue
    DataValue = mask(u8) [Variant] [Status u32] [SourceTimestamp i64]
                [SourcePicoseconds u16] [ServerTimestamp i64] [ServerPicoseconds u16]

Arrays are an Int32 length (-1: null) then the elements.  One deliberate refusal:
asyncua 2.1 reads a DataValue's optional fields in its dataclass order (…,
ServerTimestamp, SourcePicoseconds, …) where the spec puts SourcePicoseconds before
ServerTimestamp; the two readings differ only when both of those bits are set, and
such DataValues are left to asyncua, so the fast path never disagrees with it.

Where all items of a notification share one layout (same mask, same type), the items
are one strided NumPy record view; otherwise one pass reads each item's mask and type
to find the next, and the items of each layout are gathered into a record array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

PUBLISH_RESPONSE = 829
"""PublishResponse_Encoding_DefaultBinary."""
DATA_CHANGE_NOTIFICATION = 811
"""DataChangeNotification_Encoding_DefaultBinary."""

ABSENT = np.iinfo(np.int64).min
"""A timestamp column's value where the DataValue has no such timestamp."""

EPOCH_TICKS = 116_444_736_000_000_000
"""1970-01-01 in OPC UA DateTime ticks (100 ns since 1601-01-01 UTC)."""
# Timestamps the fast path accepts: 1678-01-01 .. 2261-12-31, inside int64 ns.
_MIN_TICKS = EPOCH_TICKS - 9_183_110_400 * 10_000_000
_MAX_TICKS = EPOCH_TICKS + 9_214_646_400 * 10_000_000

# Variant built-in type id → (NumPy dtype of the encoded scalar, size in bytes).
SCALAR_TYPES: dict[int, tuple[str, int]] = {
    1: ("u1", 1),  # Boolean (any non-zero byte is true)
    2: ("i1", 1),  # SByte
    3: ("u1", 1),  # Byte
    4: ("<i2", 2),  # Int16
    5: ("<u2", 2),  # UInt16
    6: ("<i4", 4),  # Int32
    7: ("<u4", 4),  # UInt32
    8: ("<i8", 8),  # Int64
    9: ("<u8", 8),  # UInt64
    10: ("<f4", 4),  # Float
    11: ("<f8", 8),  # Double
}
BOOLEAN = 1
NULL = 0
"""Variant type of a null Variant, and the ``variant_type`` of a row without a value
(value NaN): asyncua gives ``Variant(None)`` for both."""
NO_VALUE = -1  # _layout's marker: the DataValue has no Value field

_VALUE, _STATUS, _SRC_TS, _SRV_TS, _SRC_PS, _SRV_PS = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_KNOWN_BITS = 0x3F

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")


class _Refuse(Exception):
    """Not a message the fast path handles: asyncua decodes it."""


@dataclass(frozen=True, slots=True)
class DataChanges:
    """The data changes of one publish response, as columns (one row per change)."""

    client_handle: npt.NDArray[np.uint32]
    value: npt.NDArray[np.float64]
    """The Variant's value as float64 (Boolean: 0/1; Int64/UInt64 rounded like float());
    NaN for a null Variant or a DataValue without a value."""
    variant_type: npt.NDArray[np.uint8]
    """The Variant's built-in type id (1 Boolean ... 11 Double; 0 null or no value)."""
    status: npt.NDArray[np.uint32]
    """The StatusCode (0 Good where the DataValue has none)."""
    source_ts: npt.NDArray[np.int64]
    """SourceTimestamp, ns since 1970 UTC (100 ns resolution); ABSENT if missing."""
    server_ts: npt.NDArray[np.int64]
    """ServerTimestamp, as source_ts."""

    def __len__(self) -> int:
        return len(self.client_handle)

    def take(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> DataChanges:
        return DataChanges(
            self.client_handle[rows],
            self.value[rows],
            self.variant_type[rows],
            self.status[rows],
            self.source_ts[rows],
            self.server_ts[rows],
        )


@dataclass(frozen=True, slots=True)
class FastPublish:
    """What a fast-decoded PublishResponse holds besides the changes, as asyncua needs it
    for acknowledgements and its subscription bookkeeping."""

    response_ticks: int
    """ResponseHeader.Timestamp (OPC UA DateTime ticks)."""
    request_handle: int
    subscription_id: int
    available_sequence_numbers: list[int]
    more_notifications: bool
    sequence_number: int
    publish_ticks: int
    """NotificationMessage.PublishTime (OPC UA DateTime ticks)."""
    changes: DataChanges
    notifications: int
    """How many DataChangeNotifications the message carried (their rows are concatenated)."""
    results: list[int] = field(default_factory=list)
    """Results of the acknowledgements sent with the request (StatusCodes)."""


class _Reader:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def need(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise _Refuse
        self.pos = pos + n
        return pos

    def u8(self) -> int:
        value: int = _U8.unpack_from(self.buf, self.need(1))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack_from(self.buf, self.need(4))[0]
        return value

    def i32(self) -> int:
        value: int = _I32.unpack_from(self.buf, self.need(4))[0]
        return value

    def i64(self) -> int:
        value: int = _I64.unpack_from(self.buf, self.need(8))[0]
        return value

    def u32_array(self) -> list[int]:
        n = self.i32()
        if n <= 0:
            if n < -1:
                raise _Refuse
            return []
        start = self.need(4 * n)
        return [int(x) for x in np.frombuffer(self.buf, "<u4", n, start)]

    def empty_array(self) -> None:
        """An array that must be null or empty (diagnostics, string table)."""
        if self.i32() not in (-1, 0):
            raise _Refuse

    def null_extension_object(self) -> None:
        """A null ExtensionObject: TwoByte NodeId 0, no body."""
        if self.u8() != 0 or self.u8() != 0 or self.u8() != 0:
            raise _Refuse

    def numeric_ns0_nodeid(self) -> int:
        """A namespace-0 numeric NodeId (TwoByte, FourByte or Numeric encoding)."""
        kind = self.u8()
        if kind == 0:
            return self.u8()
        if kind == 1:
            if self.u8() != 0:
                raise _Refuse
            value: int = _U16.unpack_from(self.buf, self.need(2))[0]
            return value
        if kind == 2:
            if _U16.unpack_from(self.buf, self.need(2))[0] != 0:
                raise _Refuse
            return self.u32()
        raise _Refuse


def decode(body: bytes | bytearray | memoryview) -> FastPublish | None:
    """The PublishResponse in ``body`` (from its TypeId NodeId to its end) as columns, or
    ``None`` when it is not one the fast path handles (asyncua must decode it)."""
    try:
        return _decode(body)
    except (_Refuse, struct.error, ValueError, TypeError, IndexError, OverflowError):
        return None


def _decode(body: bytes | bytearray | memoryview) -> FastPublish | None:
    r = _Reader(body)
    if r.numeric_ns0_nodeid() != PUBLISH_RESPONSE:
        return None
    response_ticks = r.i64()
    request_handle = r.u32()
    if r.u32() != 0:  # a Bad service result: asyncua's handling
        return None
    if r.u8() != 0:  # ServiceDiagnostics
        return None
    r.empty_array()  # StringTable
    r.null_extension_object()  # AdditionalHeader
    subscription_id = r.u32()
    available = r.u32_array()
    more = r.u8()
    sequence_number = r.u32()
    publish_ticks = r.i64()
    count = r.i32()
    if count <= 0:  # keep-alive (or malformed): nothing worth a fast path
        return None
    parts: list[DataChanges] = []
    for _ in range(count):
        if r.numeric_ns0_nodeid() != DATA_CHANGE_NOTIFICATION:
            return None
        if r.u8() != 0x01:  # binary body
            return None
        length = r.i32()
        start = r.need(length) if length > 0 else -1
        if start < 0:
            return None
        r.pos = start
        parts.append(_data_change(r, start + length))
        if r.pos != start + length:
            return None
    results = r.u32_array()
    r.empty_array()  # DiagnosticInfos
    if r.pos != r.end:
        return None
    changes = parts[0] if len(parts) == 1 else _concat(parts)
    return FastPublish(
        response_ticks=response_ticks,
        request_handle=request_handle,
        subscription_id=subscription_id,
        available_sequence_numbers=available,
        more_notifications=more != 0,
        sequence_number=sequence_number,
        publish_ticks=publish_ticks,
        changes=changes,
        notifications=count,
        results=results,
    )


def _concat(parts: list[DataChanges]) -> DataChanges:
    return DataChanges(
        np.concatenate([p.client_handle for p in parts]),
        np.concatenate([p.value for p in parts]),
        np.concatenate([p.variant_type for p in parts]),
        np.concatenate([p.status for p in parts]),
        np.concatenate([p.source_ts for p in parts]),
        np.concatenate([p.server_ts for p in parts]),
    )


def _data_change(r: _Reader, end: int) -> DataChanges:
    """One DataChangeNotification body, ending at ``end``."""
    saved_end, r.end = r.end, end
    n = r.i32()
    if n < 0 or n * 5 > r.end - r.pos:  # an item is at least 5 bytes
        raise _Refuse  # a null item list (asyncua's business) or a truncated one
    changes = _uniform(r, n) if n else None
    if changes is None:
        changes = _mixed(r, n)
    r.empty_array()  # DiagnosticInfos
    r.end = saved_end
    return changes


def _layout(mask: int, vtype: int) -> list[tuple[str, str, int]] | None:
    """The fields of a MonitoredItemNotification with this DataValue mask and Variant
    type (``NO_VALUE`` when the mask has no Value bit), as (name, dtype, offset), the
    last entry giving the item's size; None if the fast path does not take it."""
    if mask & ~_KNOWN_BITS or (mask & _SRC_PS and mask & _SRV_TS):
        return None  # reserved bits; or fields the spec and asyncua order differently
    fields = [("handle", "<u4", 0), ("mask", "u1", 4)]
    offset = 5
    if mask & _VALUE:
        fields.append(("vtype", "u1", 5))
        offset = 6
        if vtype != NULL:
            scalar = SCALAR_TYPES.get(vtype)
            if scalar is None:
                return None
            fields.append(("value", scalar[0], 6))
            offset += scalar[1]
    elif vtype != NO_VALUE:
        return None
    for bit, name, dtype, size in (
        (_STATUS, "status", "<u4", 4),
        (_SRC_TS, "source_ts", "<i8", 8),
        (_SRC_PS, "source_ps", "<u2", 2),
        (_SRV_TS, "server_ts", "<i8", 8),
        (_SRV_PS, "server_ps", "<u2", 2),
    ):
        if mask & bit:
            fields.append((name, dtype, offset))
            offset += size
    fields.append(("", "", offset))
    return fields


def _dtype(layout: list[tuple[str, str, int]]) -> np.dtype[np.void]:
    return np.dtype(
        {
            "names": [f[0] for f in layout[:-1]],
            "formats": [f[1] for f in layout[:-1]],
            "offsets": [f[2] for f in layout[:-1]],
            "itemsize": layout[-1][2],
        }
    )


def _columns(rec: npt.NDArray[np.void], mask: int, vtype: int) -> DataChanges:
    """The columns of items that all have one layout (a record array)."""
    n = len(rec)
    if vtype in (NULL, NO_VALUE):
        values = np.full(n, np.nan, dtype=np.float64)
    else:
        value = rec["value"]
        values = ((value != 0) if vtype == BOOLEAN else value).astype(np.float64)
    status = rec["status"].astype(np.uint32) if mask & _STATUS else np.zeros(n, dtype=np.uint32)
    source_ts = _ns(rec["source_ts"]) if mask & _SRC_TS else np.full(n, ABSENT, dtype=np.int64)
    server_ts = _ns(rec["server_ts"]) if mask & _SRV_TS else np.full(n, ABSENT, dtype=np.int64)
    return DataChanges(
        rec["handle"].astype(np.uint32),
        values,
        np.full(n, 0 if vtype == NO_VALUE else vtype, dtype=np.uint8),
        status,
        source_ts,
        server_ts,
    )


def _uniform(r: _Reader, n: int) -> DataChanges | None:
    """The n items as one record view if they all have the first item's layout."""
    first = r.pos
    if first + 5 > r.end:
        raise _Refuse
    mask = r.buf[first + 4]
    if mask & _VALUE:
        if first + 6 > r.end:
            raise _Refuse
        vtype = r.buf[first + 5]
    else:
        vtype = NO_VALUE
    layout = _layout(mask, vtype)
    if layout is None:
        raise _Refuse  # the first item already is not ours
    size = layout[-1][2]
    if first + n * size > r.end:
        return None  # not uniform (or truncated): the grouped path decides
    rec = np.frombuffer(r.buf, dtype=_dtype(layout), count=n, offset=first)
    if not (rec["mask"] == mask).all():
        return None
    if mask & _VALUE and not (rec["vtype"] == vtype).all():
        return None
    changes = _columns(rec, mask, vtype)
    r.pos = first + n * size
    return changes


def _ns(ticks: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """OPC UA DateTime ticks → ns since 1970; refuses ticks outside int64 ns."""
    t = ticks.astype(np.int64)
    if len(t) and (t.min() < _MIN_TICKS or t.max() > _MAX_TICKS):
        raise _Refuse
    ns: npt.NDArray[np.int64] = (t - np.int64(EPOCH_TICKS)) * np.int64(100)
    return ns


def _mixed(r: _Reader, n: int) -> DataChanges:
    """Items of several layouts: one pass over the items reads only each one's mask and
    type (to find where the next begins), then every layout's items are gathered into
    a record array of their own and their columns scattered back in order."""
    buf = r.buf
    pos = r.pos
    end = r.end
    offsets = [0] * n
    keys = [0] * n
    sizes: dict[int, int] = {}
    for i in range(n):
        if pos + 5 > end:
            raise _Refuse
        mask = buf[pos + 4]
        if mask & _VALUE:
            if pos + 6 > end:
                raise _Refuse
            key = (mask << 8) | buf[pos + 5]
        else:
            key = (mask << 8) | 0xFF
        size = sizes.get(key)
        if size is None:
            layout = _layout(mask, key & 0xFF if mask & _VALUE else NO_VALUE)
            if layout is None:
                raise _Refuse
            size = sizes[key] = layout[-1][2]
        offsets[i] = pos
        keys[i] = key
        pos += size
    if pos > end:
        raise _Refuse
    r.pos = pos
    starts = np.array(offsets, dtype=np.intp)
    kinds = np.array(keys, dtype=np.int32)
    raw = np.frombuffer(buf, dtype=np.uint8, count=pos)
    out = DataChanges(
        np.empty(n, dtype=np.uint32),
        np.empty(n, dtype=np.float64),
        np.empty(n, dtype=np.uint8),
        np.empty(n, dtype=np.uint32),
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.int64),
    )
    for key, size in sizes.items():
        rows = np.flatnonzero(kinds == key)
        mask = key >> 8
        vtype = key & 0xFF if mask & _VALUE else NO_VALUE
        layout = _layout(mask, vtype)
        assert layout is not None
        gathered = raw[starts[rows, None] + np.arange(size)]  # one row of bytes per item
        rec = gathered.view(_dtype(layout)).reshape(len(rows))
        part = _columns(rec, mask, vtype)
        out.client_handle[rows] = part.client_handle
        out.value[rows] = part.value
        out.variant_type[rows] = part.variant_type
        out.status[rows] = part.status
        out.source_ts[rows] = part.source_ts
        out.server_ts[rows] = part.server_ts
    return out
