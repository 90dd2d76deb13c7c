"""The compiled S7 read plan (pure): blocks of bytes, packed into PDU-sized requests.

:func:`build_plan` groups tags by area (each DB is its own area), sorts them by byte
offset and coalesces them into :class:`ReadBlock` byte ranges, bridging gaps of at most
``max_gap`` unused bytes and never exceeding what one response item can carry for the
negotiated PDU.  Blocks are then packed, in order, into :class:`ReadRequest` s whose
request *and* response both fit the PDU (at most ``max_items`` items each).

S7 is big-endian.  Decoding a block is one fancy-index + ``view`` per data type
(precomputed NumPy index arrays, no per-tag Python work); bits are ``(byte >> bit) & 1``.
Values come out as float64; 64-bit integers above 2**53 lose precision there.

Strings (``STRING[n]``: max length byte, actual length byte, n one-byte characters)
are decoded per tag into the batch's text column, as Latin-1 (every byte is a
character, so decoding never fails); an actual length above the maximum or above the
configured ``n`` (a wrong address or length) is ``BAD_DECODING_ERROR``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from isthmus.connectors.base import BoundTag
from isthmus.connectors.s7.config import (
    AREA_CODE,
    MIN_PDU,
    Area,
    S7Address,
    S7SourceConfig,
    S7TagConfig,
    Size,
)
from isthmus.model.config import DataType
from isthmus.model.quality import Quality

HEADER = 12
"""S7 header of a response (ACK_DATA: 10 bytes + error class/code)."""
PARAM = 2
"""Read parameters: function + item count."""
ITEM_SPEC = 12
"""One item's address specification in a read request."""
ITEM_HEAD = 4
"""Return code, transport size, length before each item's data in a response."""

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
QualityArray = npt.NDArray[np.uint32]

_DTYPE: dict[tuple[Size, DataType], str] = {
    (Size.B, DataType.UINT16): "u1",
    (Size.B, DataType.INT16): "i1",
    (Size.W, DataType.INT16): ">i2",
    (Size.W, DataType.UINT16): ">u2",
    (Size.D, DataType.INT32): ">i4",
    (Size.D, DataType.UINT32): ">u4",
    (Size.D, DataType.FLOAT32): ">f4",
    (Size.L, DataType.INT64): ">i8",
    (Size.L, DataType.UINT64): ">u8",
    (Size.L, DataType.FLOAT64): ">f8",
}
_STRUCT: dict[tuple[Size, DataType], str] = {
    (Size.B, DataType.UINT16): ">B",
    (Size.B, DataType.INT16): ">b",
    (Size.W, DataType.INT16): ">h",
    (Size.W, DataType.UINT16): ">H",
    (Size.D, DataType.INT32): ">i",
    (Size.D, DataType.UINT32): ">I",
    (Size.D, DataType.FLOAT32): ">f",
    (Size.L, DataType.INT64): ">q",
    (Size.L, DataType.UINT64): ">Q",
    (Size.L, DataType.FLOAT64): ">d",
}


def max_block_bytes(pdu: int) -> int:
    """The most bytes one item of a read response can carry within ``pdu``."""
    return pdu - HEADER - PARAM - ITEM_HEAD


@dataclass(frozen=True, slots=True)
class PlanTag:
    tag_id: int
    address: S7Address
    data_type: DataType
    length: int | None = None
    """n of a STRING[n] (data_type string)."""

    @property
    def width(self) -> int:
        if self.length is not None:
            return self.length + 2
        return self.address.width


@dataclass(frozen=True, slots=True, eq=False)
class DecodeGroup:
    """Tags of one block sharing a data type: ``positions`` index the block's tag slice,
    ``index`` is ``(n, width)`` byte offsets into the block; ``bits`` for bool groups."""

    positions: IntArray
    index: IntArray
    target: np.dtype[Any] | None
    bits: npt.NDArray[np.uint8] | None = None
    lengths: tuple[int, ...] | None = None
    """STRING groups: n of each tag's STRING[n] (``index`` holds its first byte)."""


@dataclass(frozen=True, slots=True, eq=False)
class ReadBlock:
    """One byte range of one area: ``tag_ids[start:stop]`` of the plan."""

    area: Area
    db: int
    byte: int
    size: int
    start: int
    stop: int
    tag_ids: npt.NDArray[np.int32]
    groups: tuple[DecodeGroup, ...]

    @property
    def has_text(self) -> bool:
        return any(g.lengths is not None for g in self.groups)

    @property
    def area_code(self) -> int:
        return AREA_CODE[self.area]

    @property
    def label(self) -> str:
        where = f"DB{self.db}" if self.area is Area.DB else self.area.value
        return f"{where} bytes {self.byte}..{self.byte + self.size - 1}"

    def __len__(self) -> int:
        return self.stop - self.start

    def decode_into(
        self,
        data: bytes | bytearray,
        values: FloatArray,
        quality: QualityArray,
        texts: npt.NDArray[np.object_] | None = None,
    ) -> int:
        """Decode the block's bytes into ``values[start:stop]`` (strings into
        ``texts``, needed when the block has any); a short answer makes the block
        ``BAD_DECODING_ERROR`` (never raises).  Returns the Good count."""
        out = values[self.start : self.stop]
        q = quality[self.start : self.stop]
        if len(data) != self.size:
            out.fill(np.nan)
            q.fill(Quality.BAD_DECODING_ERROR)
            return 0
        raw = np.frombuffer(bytes(data), dtype=np.uint8)
        q.fill(Quality.GOOD)
        bad = 0
        with np.errstate(invalid="ignore"):
            for group in self.groups:
                if group.lengths is not None:
                    assert texts is not None, "a block with strings needs a text column"
                    bad += _decode_strings(group, bytes(data), self.start, out, q, texts)
                    continue
                picked = raw[group.index]
                if group.bits is not None:
                    out[group.positions] = (picked[:, 0] >> group.bits) & 1
                else:
                    assert group.target is not None
                    out[group.positions] = np.ascontiguousarray(picked).view(group.target)[:, 0]
        return len(out) - bad

    def decode(self, data: bytes | bytearray) -> tuple[FloatArray, QualityArray]:
        values = np.empty(self.stop, dtype=np.float64)
        quality = np.empty(self.stop, dtype=np.uint32)
        texts = np.full(self.stop, None, dtype=object) if self.has_text else None
        self.decode_into(data, values, quality, texts)
        return values[self.start :], quality[self.start :]

    def fail_into(self, quality: QualityArray, values: FloatArray, code: int) -> None:
        values[self.start : self.stop] = np.nan
        quality[self.start : self.stop] = code


def _decode_strings(
    group: DecodeGroup,
    data: bytes,
    start: int,
    out: FloatArray,
    q: QualityArray,
    texts: npt.NDArray[np.object_],
) -> int:
    """The STRING tags of one group: text (Latin-1) or ``BAD_DECODING_ERROR``; returns
    how many were Bad."""
    assert group.lengths is not None
    bad = 0
    starts = group.index[:, 0].tolist()
    for pos, first, n in zip(group.positions.tolist(), starts, group.lengths, strict=True):
        out[pos] = np.nan
        maximum, actual = data[first], data[first + 1]
        if actual > n or (maximum and actual > maximum):
            q[pos] = Quality.BAD_DECODING_ERROR
            bad += 1
            continue
        texts[start + pos] = data[first + 2 : first + 2 + actual].decode("latin-1")
    return bad


def encode_string(text: str, length: int) -> bytes:
    """The actual-length byte and characters of ``text`` for a STRING[``length``]
    (written from the string's second byte, so the PLC's maximum length stays as it
    is).  ValueError if it is too long or not Latin-1."""
    try:
        chars = text.encode("latin-1")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise ValueError(f"{bad!r} is not a single-byte (Latin-1) character") from None
    if len(chars) > length:
        raise ValueError(f"{len(chars)} characters do not fit STRING[{length}]")
    return bytes([len(chars)]) + chars


@dataclass(frozen=True, slots=True, eq=False)
class ReadRequest:
    """Blocks read in one PDU exchange (one item: a plain read)."""

    blocks: tuple[ReadBlock, ...]

    @property
    def request_bytes(self) -> int:
        return HEADER - 2 + PARAM + ITEM_SPEC * len(self.blocks)

    @property
    def response_bytes(self) -> int:
        return response_size([b.size for b in self.blocks])


def response_size(sizes: Sequence[int]) -> int:
    """Bytes of a read response carrying items of ``sizes`` (fill byte after odd items
    except the last)."""
    total = HEADER + PARAM
    for i, size in enumerate(sizes):
        total += ITEM_HEAD + size + (size % 2 if i < len(sizes) - 1 else 0)
    return total


@dataclass(frozen=True, slots=True, eq=False)
class ReadPlan:
    requests: tuple[ReadRequest, ...]
    tag_ids: npt.NDArray[np.int32]
    pdu: int

    @property
    def blocks(self) -> tuple[ReadBlock, ...]:
        return tuple(b for r in self.requests for b in r.blocks)

    @property
    def has_text(self) -> bool:
        return any(b.has_text for b in self.blocks)

    def __len__(self) -> int:
        return len(self.tag_ids)


def build_plan(
    tags: Sequence[PlanTag], *, pdu: int = MIN_PDU, max_gap: int = 16, max_items: int = 20
) -> ReadPlan:
    """Coalesce tags into blocks and pack blocks into requests fitting ``pdu``."""
    if pdu < MIN_PDU // 2:
        raise ValueError(f"PDU size {pdu} is too small")
    if max_gap < 0 or max_items < 1:
        raise ValueError("max_gap must be >= 0 and max_items >= 1")
    limit = max_block_bytes(pdu)
    area_rank = {area: i for i, area in enumerate(Area)}
    ordered = sorted(
        tags,
        key=lambda t: (
            area_rank[t.address.area],
            t.address.db,
            t.address.byte,
            -t.width,
            t.tag_id,
        ),
    )
    blocks: list[ReadBlock] = []
    i = 0
    while i < len(ordered):
        first = ordered[i].address
        begin, end = first.byte, first.byte + ordered[i].width
        j = i + 1
        while j < len(ordered):
            nxt = ordered[j].address
            if nxt.area is not first.area or nxt.db != first.db:
                break
            new_end = max(end, nxt.byte + ordered[j].width)
            if nxt.byte - end > max_gap or new_end - begin > limit:
                break
            end = new_end
            j += 1
        blocks.append(_compile_block(ordered[i:j], begin, end - begin, start=i))
        i = j
    requests: list[ReadRequest] = []
    current: list[ReadBlock] = []
    for block in blocks:
        candidate = [*current, block]
        fits = (
            len(candidate) <= max_items
            and response_size([b.size for b in candidate]) <= pdu
            and HEADER - 2 + PARAM + ITEM_SPEC * len(candidate) <= pdu
        )
        if current and not fits:
            requests.append(ReadRequest(tuple(current)))
            candidate = [block]
        current = candidate
    if current:
        requests.append(ReadRequest(tuple(current)))
    tag_ids = np.array([t.tag_id for t in ordered], dtype=np.int32)
    return ReadPlan(tuple(requests), tag_ids, pdu)


def _compile_block(tags: Sequence[PlanTag], byte: int, size: int, start: int) -> ReadBlock:
    first = tags[0].address
    grouped: dict[tuple[Size, DataType], list[int]] = {}
    for pos, tag in enumerate(tags):
        grouped.setdefault((tag.address.size, tag.data_type), []).append(pos)
    groups: list[DecodeGroup] = []
    for (size_letter, data_type), positions in grouped.items():
        width = max(1, int(size_letter))
        offsets = np.array([tags[p].address.byte - byte for p in positions], dtype=np.intp)
        index = np.ascontiguousarray(offsets[:, None] + np.arange(width, dtype=np.intp)[None, :])
        pos_arr = np.array(positions, dtype=np.intp)
        if data_type is DataType.STRING:
            lengths = tuple(tags[p].length or 0 for p in positions)
            groups.append(DecodeGroup(pos_arr, index, None, None, lengths))
        elif size_letter is Size.X:
            bits = np.array([tags[p].address.bit or 0 for p in positions], dtype=np.uint8)
            groups.append(DecodeGroup(pos_arr, index, None, bits))
        else:
            groups.append(DecodeGroup(pos_arr, index, np.dtype(_DTYPE[(size_letter, data_type)])))
    return ReadBlock(
        area=first.area,
        db=first.db,
        byte=byte,
        size=size,
        start=start,
        stop=start + len(tags),
        tag_ids=np.array([t.tag_id for t in tags], dtype=np.int32),
        groups=tuple(groups),
    )


def plan_for(
    config: S7SourceConfig, tags: Sequence[BoundTag[S7TagConfig]], pdu: int = MIN_PDU
) -> ReadPlan:
    return build_plan(
        [PlanTag(t.tag_id, t.config.parsed, t.config.data_type, t.config.length) for t in tags],
        pdu=pdu,
        max_gap=config.max_gap,
        max_items=config.max_items,
    )


def plans_for(
    config: S7SourceConfig, tags: Sequence[BoundTag[S7TagConfig]], pdu: int = MIN_PDU
) -> dict[str | None, ReadPlan]:
    """One plan per poll group (``None``: the default group), in first-seen order."""
    grouped: dict[str | None, list[BoundTag[S7TagConfig]]] = {}
    for tag in tags:
        grouped.setdefault(tag.config.poll_group, []).append(tag)
    return {group: plan_for(config, members, pdu) for group, members in grouped.items()}


def encode_value(size: Size, data_type: DataType | str, value: float | int | bool) -> bytes:
    """The big-endian bytes of ``value`` for a B/W/D/L address (writes, tests).
    Integers must fit (``struct.error`` otherwise); float32 rounds."""
    fmt = _STRUCT[(size, DataType(data_type))]
    return struct.pack(fmt, value if fmt[-1] in "fd" else int(value))


def decode_value(size: Size, data_type: DataType | str, data: bytes) -> float:
    """The raw value held by ``data`` (the inverse of :func:`encode_value`)."""
    fmt = _STRUCT[(size, DataType(data_type))]
    return float(struct.unpack(fmt, data)[0])


def decode_raw(size: Size, data_type: DataType | str, data: bytes) -> float | int:
    """Like :func:`decode_value`, exact: an integer type gives a Python int (64-bit
    values beyond 2**53 included), a real a float."""
    fmt = _STRUCT[(size, DataType(data_type))]
    value: float | int = struct.unpack(fmt, data)[0]
    return value
