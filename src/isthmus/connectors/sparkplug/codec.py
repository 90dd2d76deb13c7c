"""Sparkplug B payloads and topics: decoding to plain Python values and encoding ours.

Only this module touches the generated protobuf code (``sparkplug_b_pb2``, untyped):
the rest of the connector sees the dataclasses below.  Decoding never raises anything
but :class:`DecodeError`; a metric whose value does not fit its declared datatype is
kept with ``error`` set, so one bad metric does not lose the others of its payload.

Strings: a String or Text metric (datatypes 12, 14) decodes as a non-numeric metric
whose ``text`` is its value; string tags are published as String metrics.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf.message import DecodeError as _PbDecodeError  # type: ignore[import-untyped]

from isthmus.connectors.base import FLOAT32_MAX, raw_number, round_half_away
from isthmus.connectors.sparkplug import sparkplug_b_pb2 as _pb
from isthmus.model.config import DataType, TagConfig

NAMESPACE = "spBv1.0"

_Payload: Any = getattr(_pb, "Payload")  # noqa: B009 - the generated module is untyped

# Sparkplug B datatypes (specification 6.4.16)
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT = 9, 10, 11, 12, 13, 14
UUID, DATASET, BYTES, FILE, TEMPLATE = 15, 16, 17, 18, 19

NUMERIC_TYPES = frozenset(
    {INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN, DATETIME}
)
TEXT_TYPES = frozenset({STRING, TEXT})
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_VALUE_FIELD = {
    INT8: "int_value",
    INT16: "int_value",
    INT32: "int_value",
    UINT8: "int_value",
    UINT16: "int_value",
    UINT32: "int_value",
    INT64: "long_value",
    UINT64: "long_value",
    DATETIME: "long_value",
    FLOAT: "float_value",
    DOUBLE: "double_value",
    BOOLEAN: "boolean_value",
}

MESSAGE_TYPES = frozenset(
    {"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD"}
)
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
QUALITY_PROPERTY = "Quality"
ENG_UNIT_PROPERTY = "engUnit"
"""The engineering unit of a metric, as a String property of its birth (the convention
Ignition and most Sparkplug tools follow)."""


class DecodeError(ValueError):
    """The payload is not a Sparkplug B payload we can use."""


@dataclass(frozen=True, slots=True)
class Topic:
    group: str
    kind: str
    node: str
    device: str | None


def parse_topic(topic: str) -> Topic | None:
    """``spBv1.0/GROUP/KIND/NODE[/DEVICE]``; None for anything else (STATE included)."""
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[2] not in MESSAGE_TYPES:
        return None
    if not all(parts):
        return None
    return Topic(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None)


def topic(group: str, kind: str, node: str, device: str | None = None) -> str:
    tail = f"/{device}" if device is not None else ""
    return f"{NAMESPACE}/{group}/{kind}/{node}{tail}"


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: int | None
    value: float
    """NaN when null, not numeric or in error."""
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    quality: int | None = None
    """An OPC UA status code from the ``Quality`` property, if the metric has one."""
    unit: str | None = None
    """The ``engUnit`` property, if the metric has one (births carry it)."""
    numeric: bool = True
    """False for strings, bytes, datasets, templates: not mapped onto tags."""
    raw: object = None
    """Booleans, strings and bytes as sent (for control metrics such as bdSeq, Rebirth)."""
    error: str | None = None
    field: str | None = None
    """The protobuf value field that was set (int_value, long_value...)."""

    @property
    def text(self) -> str | None:
        """The value of a String or Text metric (datatype 12/14, or none declared);
        None for anything else."""
        if (
            self.field == "string_value"
            and (self.datatype is None or self.datatype in TEXT_TYPES)
            and isinstance(self.raw, str)
        ):
            return self.raw
        return None


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[Metric, ...]


def _to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _quality(props: Any) -> int | None:
    """The ``Quality`` property: UInt32 → an OPC UA status code (what our edge sends);
    Int32 → Ignition style (192 Good, 64-191 Uncertain, else Bad)."""
    keys = list(props.keys)
    if QUALITY_PROPERTY not in keys or len(keys) != len(props.values):
        return None
    prop = props.values[keys.index(QUALITY_PROPERTY)]
    which = prop.WhichOneof("value")
    if which not in ("int_value", "long_value"):
        return None
    code = int(getattr(prop, which))
    if prop.type == UINT32:
        return code & 0xFFFFFFFF
    if code == 192:
        return 0x00000000
    if 64 <= code < 192:
        return 0x40000000
    return 0x80000000


def _string_property(props: Any, key: str) -> str | None:
    keys = list(props.keys)
    if key not in keys or len(keys) != len(props.values):
        return None
    prop = props.values[keys.index(key)]
    return str(prop.string_value) if prop.WhichOneof("value") == "string_value" else None


def _metric(m: Any) -> Metric:
    name = m.name if m.HasField("name") else None
    alias = int(m.alias) if m.HasField("alias") else None
    ts = int(m.timestamp) if m.HasField("timestamp") else None
    datatype = int(m.datatype) if m.HasField("datatype") else None
    has_props = m.HasField("properties")
    quality = _quality(m.properties) if has_props else None
    which = m.WhichOneof("value")
    flags: dict[str, Any] = {
        "is_historical": bool(m.is_historical),
        "is_transient": bool(m.is_transient),
        "quality": quality,
        "unit": _string_property(m.properties, ENG_UNIT_PROPERTY) if has_props else None,
    }
    if m.is_null or which is None:
        return Metric(name, alias, ts, datatype, math.nan, is_null=True, **flags)
    raw = getattr(m, which) if which in _RAW_FIELDS else None
    base = Metric(name, alias, ts, datatype, math.nan, raw=raw, field=which, **flags)
    return with_datatype(base, datatype)


def with_datatype(metric: Metric, datatype: int | None) -> Metric:
    """The metric's value interpreted as ``datatype`` (the payload's own, or the one its
    birth declared when a data message leaves it out)."""
    which, raw, name = metric.field, metric.raw, metric.name or metric.alias
    if metric.is_null or which is None:
        return replace(metric, datatype=datatype)
    if which not in _NUMERIC_FIELDS:
        return replace(metric, datatype=datatype, value=math.nan, numeric=False)
    if datatype is not None and datatype not in NUMERIC_TYPES:
        error = f"metric {name}: datatype {datatype} with a numeric value"
        return replace(metric, datatype=datatype, value=math.nan, error=error)
    expected = _VALUE_FIELD.get(datatype) if datatype is not None else None
    if expected is not None and expected != which:
        error = f"metric {name}: datatype {datatype} but {which}"
        return replace(metric, datatype=datatype, value=math.nan, error=error)
    if which == "boolean_value":
        value = 1.0 if raw else 0.0
    elif datatype in _SIGNED_BITS:
        value = float(_to_signed(int(raw), _SIGNED_BITS[datatype]))  # type: ignore[call-overload]
    else:
        value = float(raw)  # type: ignore[arg-type]
    return replace(metric, datatype=datatype, value=value, error=None, numeric=True)


_NUMERIC_FIELDS = frozenset(
    {"int_value", "long_value", "float_value", "double_value", "boolean_value"}
)
_RAW_FIELDS = _NUMERIC_FIELDS | {"string_value", "bytes_value"}


def decode(data: bytes) -> Payload:
    """Parse a Sparkplug B payload; raises :class:`DecodeError` for anything unusable."""
    msg = _Payload()
    try:
        msg.ParseFromString(data)
    except (_PbDecodeError, RuntimeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"not a Sparkplug B payload: {exc}") from None
    try:
        metrics = tuple(_metric(m) for m in msg.metrics)
    except (ValueError, TypeError, OverflowError, UnicodeError) as exc:  # pragma: no cover
        raise DecodeError(f"bad metric: {exc}") from None
    seq = int(msg.seq) if msg.HasField("seq") else None
    if seq is not None and seq > 255:
        raise DecodeError(f"seq {seq} outside 0-255")
    ts = int(msg.timestamp) if msg.HasField("timestamp") else None
    return Payload(ts, seq, metrics)


# ------------------------------------------------------------------------ encoding

DATATYPE_OF: dict[DataType, int] = {
    DataType.BOOL: BOOLEAN,
    DataType.INT16: INT16,
    DataType.UINT16: UINT16,
    DataType.INT32: INT32,
    DataType.UINT32: UINT32,
    DataType.INT64: INT64,
    DataType.UINT64: UINT64,
    DataType.FLOAT32: FLOAT,
    DataType.FLOAT64: DOUBLE,
    DataType.STRING: STRING,
}


DATATYPE_FROM: dict[int, DataType] = {
    BOOLEAN: DataType.BOOL,
    INT8: DataType.INT16,
    INT16: DataType.INT16,
    INT32: DataType.INT32,
    INT64: DataType.INT64,
    UINT8: DataType.UINT16,
    UINT16: DataType.UINT16,
    UINT32: DataType.UINT32,
    UINT64: DataType.UINT64,
    FLOAT: DataType.FLOAT32,
    DOUBLE: DataType.FLOAT64,
    STRING: DataType.STRING,
    TEXT: DataType.STRING,
}
"""The tag type a birth's metric creates (``auto_tags``); others (DateTime, DataSet,
Template...) create none."""


@dataclass(frozen=True, slots=True)
class OutMetric:
    """A metric we publish."""

    name: str | None
    alias: int | None
    datatype: int
    value: float | bool | int | str | None
    timestamp_ms: int | None = None
    quality: int | None = None
    is_historical: bool = False
    send_datatype: bool = True
    unit: str | None = None
    """Sent as the ``engUnit`` property (births)."""


def _set_value(m: Any, datatype: int, value: float | bool | int | str | None) -> None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        m.is_null = True
        return
    if datatype == BOOLEAN:
        m.boolean_value = bool(value)
    elif datatype == FLOAT:
        m.float_value = float(struct.unpack("<f", struct.pack("<f", float(value)))[0])
    elif datatype == DOUBLE:
        m.double_value = float(value)
    elif datatype in (STRING, TEXT):
        m.string_value = str(value)
    elif datatype in (INT8, INT16, INT32, UINT8, UINT16, UINT32):
        m.int_value = int(value) & 0xFFFFFFFF
    else:
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF


def encode(metrics: Iterable[OutMetric], *, seq: int | None, timestamp_ms: int | None) -> bytes:
    msg = _Payload()
    if timestamp_ms is not None:
        msg.timestamp = timestamp_ms
    if seq is not None:
        msg.seq = seq
    for om in metrics:
        m = msg.metrics.add()
        if om.name is not None:
            m.name = om.name
        if om.alias is not None:
            m.alias = om.alias
        if om.timestamp_ms is not None:
            m.timestamp = om.timestamp_ms
        if om.send_datatype:
            m.datatype = om.datatype
        if om.is_historical:
            m.is_historical = True
        if om.quality is not None:
            m.properties.keys.append(QUALITY_PROPERTY)
            prop = m.properties.values.add()
            prop.type = UINT32
            prop.int_value = om.quality & 0xFFFFFFFF
        if om.unit:
            m.properties.keys.append(ENG_UNIT_PROPERTY)
            prop = m.properties.values.add()
            prop.type = STRING
            prop.string_value = om.unit
        _set_value(m, om.datatype, om.value)
    data: bytes = msg.SerializeToString()
    return data


def metric_value(metrics: Sequence[Metric], name: str) -> Metric | None:
    for m in metrics:
        if m.name == name:
            return m
    return None


# ------------------------------------------------------------------------ commands

_INT_RANGE: dict[int, tuple[int, int]] = {
    INT8: (-(2**7), 2**7 - 1),
    INT16: (-(2**15), 2**15 - 1),
    INT32: (-(2**31), 2**31 - 1),
    INT64: (-(2**63), 2**63 - 1),
    UINT8: (0, 2**8 - 1),
    UINT16: (0, 2**16 - 1),
    UINT32: (0, 2**32 - 1),
    UINT64: (0, 2**64 - 1),
    DATETIME: (0, 2**63 - 1),
}
COMMAND_TYPES = frozenset({*_INT_RANGE, FLOAT, DOUBLE, BOOLEAN, STRING, TEXT})
"""Datatypes a command can carry (not DataSet, Bytes, File, Template, UUID)."""


def command_value(
    config: TagConfig, value: bool | int | float | str, datatype: int
) -> bool | int | float | str:
    """The metric value of a command for engineering ``value``: the tag's scale/offset
    undone, an integer datatype rounded half away from zero and range checked; a
    ValueError says why it does not fit ``datatype`` (nothing is sent then)."""
    if datatype not in COMMAND_TYPES:
        raise ValueError(f"metrics of datatype {datatype} cannot be commanded")
    if datatype in TEXT_TYPES:
        if not isinstance(value, str):
            raise ValueError(f"a String metric takes text, not {value!r}")
        return value
    if isinstance(value, str):
        raise ValueError(f"{value!r} is text; the metric is numeric (datatype {datatype})")
    if datatype == BOOLEAN:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ValueError(f"a Boolean metric takes true/false (0/1), not {value!r}")
    raw = raw_number(config, value)
    if datatype in _INT_RANGE:
        as_int = raw if isinstance(raw, int) else round_half_away(raw)
        low, high = _INT_RANGE[datatype]
        if not low <= as_int <= high:
            raise ValueError(
                f"{value!r} (raw {as_int}) is outside datatype {datatype} ({low}..{high})"
            )
        return as_int
    if datatype == FLOAT and abs(raw) > FLOAT32_MAX:
        raise ValueError(f"{value!r} does not fit a Float metric")
    return float(raw)
