"""The compiled Modbus read plan: which requests to send, and how to decode them (pure).

:func:`build_plan` groups tags by register kind, sorts them by address and coalesces
them into read blocks of at most ``max_registers`` registers (``max_bits`` bits for
coils and discrete inputs), bridging gaps of at most ``max_gap`` unused addresses and
never splitting a multi-register value.  For every block it precomputes NumPy index
arrays, one :class:`DecodeGroup` per ``(data_type, word_order, byte_order)``, so that
decoding a response is one fancy-index + byte-order ``astype`` + ``view`` per group:
no per-tag Python work on the hot path.

Conventions: *word order* ``big`` puts the high 16-bit word first (Modbus convention
used by most devices); *byte order* ``big`` is the normal Modbus byte order inside a
register.  Values come out as float64; 64-bit integers above 2**53 lose precision there.

A *bit-in-register* tag (``data_type: bool`` with ``bit: 0..15`` on a holding or input
register) reads its register like a uint16 (after the byte order) and takes bit ``bit``
(0 = least significant): one shift-and-mask over the whole group.

A *string* tag (``data_type: string`` with ``length: N``) occupies N registers, two
characters each, coalesced into blocks like any other tag.  With byte order ``big`` the
first character is the high byte of the first register (the usual layout); ``little``
swaps the two characters of every register.  Decoding stops at the first NUL (devices
pad with NULs and may leave garbage after the terminator), strips trailing spaces and
reads the bytes as UTF-8 (ASCII is a subset): bytes that are not valid UTF-8 become
U+FFFD (the replacement character) and the sample stays Good, so a device writing
Latin-1 shows its text with a visible mark rather than no value at all.  Strings are
decoded per tag in Python (they are few); their text goes to the batch's ``text``
column and their value is NaN.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from isthmus.connectors.base import BoundTag
from isthmus.connectors.modbus.config import (
    BIT_KINDS,
    REGISTER_WIDTH,
    ModbusSourceConfig,
    ModbusTagConfig,
    Order,
    RegisterKind,
)
from isthmus.model.config import DataType
from isthmus.model.quality import Quality

MAX_REGISTERS = 125
MAX_BITS = 2000
ADDRESS_SPACE = 65536


# Big-endian NumPy dtype of each register type, as laid out on the wire (high word first).
_TARGET: dict[DataType, str] = {
    DataType.INT16: ">i2",
    DataType.UINT16: ">u2",
    DataType.INT32: ">i4",
    DataType.UINT32: ">u4",
    DataType.INT64: ">i8",
    DataType.UINT64: ">u8",
    DataType.FLOAT32: ">f4",
    DataType.FLOAT64: ">f8",
}
_STRUCT: dict[DataType, str] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}
# How one register's 16 bits become two bytes: big = high byte first (normal Modbus).
_WIRE = {Order.BIG: np.dtype(">u2"), Order.LITTLE: np.dtype("<u2")}
_U16 = np.dtype(">u2")

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
QualityArray = npt.NDArray[np.uint32]
TextArray = npt.NDArray[np.object_]


def decode_string(
    words: Sequence[int] | npt.NDArray[Any], byte_order: Order | str = Order.BIG
) -> str:
    """The text of a string's registers: up to the first NUL, trailing spaces stripped,
    UTF-8 with U+FFFD for invalid bytes.  Never raises for register values."""
    regs = np.asarray(words, dtype=np.int64).reshape(-1) & 0xFFFF
    raw = regs.astype(_WIRE[Order(byte_order)]).tobytes()
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").rstrip(" ")


def encode_string(text: str, length: int, byte_order: Order | str = Order.BIG) -> list[int]:
    """The ``length`` registers holding ``text`` (UTF-8, padded with NULs).  Raises
    ``ValueError`` if it needs more than ``2 * length`` bytes or holds a NUL."""
    if "\x00" in text:
        raise ValueError("a string cannot hold NUL characters (NUL ends it)")
    data = text.encode("utf-8")
    if len(data) > 2 * length:
        raise ValueError(
            f"{len(data)} bytes do not fit {length} registers ({2 * length} bytes at most)"
        )
    padded = data.ljust(2 * length, b"\x00")
    return [int(w) for w in np.frombuffer(padded, dtype=_WIRE[Order(byte_order)])]


@dataclass(frozen=True, slots=True)
class PlanTag:
    """A tag as the planner sees it: its address and its resolved decoding."""

    tag_id: int
    kind: RegisterKind
    address: int
    data_type: DataType
    word_order: Order = Order.BIG
    byte_order: Order = Order.BIG
    bit: int | None = None
    """For a bool in a holding/input register: which bit (0 = least significant)."""
    length: int | None = None
    """For a string: the registers it occupies."""

    @property
    def width(self) -> int:
        """Registers (or bits) the value occupies."""
        if self.data_type == DataType.STRING:
            return self.length or 0
        return REGISTER_WIDTH[self.data_type]


@dataclass(frozen=True, slots=True, eq=False)
class DecodeGroup:
    """Tags of one block sharing ``(data_type, word_order, byte_order)``.

    ``positions`` are indexes into the block's tag slice; ``index`` is an
    ``(n, width)`` array of register offsets inside the response, already in
    high-word-first order.  For bit blocks ``index`` is ``(n, 1)`` bit offsets.
    ``shifts`` (bit-in-register groups only) is the bit of each tag in its register.
    """

    data_type: DataType
    positions: IntArray
    index: IntArray
    wire: np.dtype[Any] | None
    target: np.dtype[Any] | None
    shifts: npt.NDArray[np.uint16] | None = None
    lengths: IntArray | None = None
    """String groups only: the registers of each tag (``index`` is ``(n, 1)`` starts)."""
    byte_order: Order = Order.BIG


@dataclass(frozen=True, slots=True, eq=False)
class ReadBlock:
    """One read request and the decoding of its response.

    The block's tags occupy ``start:stop`` of the plan's tag order (:attr:`ReadPlan.tag_ids`).
    """

    kind: RegisterKind
    address: int
    count: int
    start: int
    stop: int
    tag_ids: npt.NDArray[np.int32]
    ends: IntArray
    """Per tag (block order): the offset one past its last register/bit."""
    groups: tuple[DecodeGroup, ...]

    @property
    def is_bits(self) -> bool:
        return self.kind in BIT_KINDS

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.address + self.count

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def has_text(self) -> bool:
        return any(g.lengths is not None for g in self.groups)

    def decode_into(
        self,
        data: Sequence[int] | Sequence[bool] | npt.NDArray[Any],
        values: FloatArray,
        quality: QualityArray,
        texts: TextArray | None = None,
    ) -> int:
        """Decode a response into ``values[start:stop]`` / ``quality[start:stop]``.

        ``data`` is the response's registers (ints 0..65535) or bits, or the raw payload
        bytes of the response (registers big-endian; bits packed LSB first, as on the
        wire): the fast path, with no Python int per register.  A response too
        short for some tags, or holding values that are not registers, makes those tags
        ``BAD_DECODING_ERROR``; it never raises.  Returns the number of Good values.
        String tags put their text into ``texts[start:stop]`` (without ``texts`` they
        are ``BAD_DECODING_ERROR``: nowhere to put it).
        """
        out = values[self.start : self.stop]
        q = quality[self.start : self.stop]
        txt = None if texts is None else texts[self.start : self.stop]
        try:
            words: npt.NDArray[Any]
            if isinstance(data, bytes | bytearray | memoryview):
                words = _from_payload(bytes(data), self.is_bits)
            elif self.is_bits:
                words = np.asarray(data, dtype=np.bool_).reshape(-1)
            else:
                words = np.asarray(data, dtype=np.uint16).reshape(-1)
        except (OverflowError, ValueError, TypeError):
            out.fill(np.nan)
            q.fill(Quality.BAD_DECODING_ERROR)
            return 0
        n = len(words)
        if n < self.count:
            # Short response: pad, then mark the tags that ran past its end.
            padded = np.zeros(self.count, dtype=words.dtype)
            padded[:n] = words
            words = padded
        q.fill(Quality.GOOD)
        no_text = 0  # string tags without a place for their text (``texts`` not given)
        # A signalling NaN in a float register would raise FE_INVALID on the cast.
        with np.errstate(invalid="ignore"):
            for group in self.groups:
                if group.lengths is not None:
                    no_text += self._decode_strings(group, words, out, q, txt)
                    continue
                picked = words[group.index]
                if group.shifts is not None and group.wire is not None:
                    regs = picked[:, 0].astype(group.wire).view(_U16)
                    out[group.positions] = (regs >> group.shifts) & 1
                elif group.wire is None or group.target is None:
                    out[group.positions] = picked[:, 0]
                else:
                    out[group.positions] = picked.astype(group.wire).view(group.target)[:, 0]
        if n < self.count:
            short = self.ends > n
            out[short] = np.nan
            q[short] = Quality.BAD_DECODING_ERROR
            if txt is not None:
                txt[short] = None
            return int(np.count_nonzero(q == Quality.GOOD))
        return len(out) - no_text

    @staticmethod
    def _decode_strings(
        group: DecodeGroup,
        words: npt.NDArray[Any],
        out: FloatArray,
        q: QualityArray,
        txt: TextArray | None,
    ) -> int:
        """Decode a string group; returns how many tags had nowhere to put their text."""
        assert group.lengths is not None
        out[group.positions] = np.nan
        if txt is None:
            q[group.positions] = Quality.BAD_DECODING_ERROR
            return len(group.positions)
        for pos, start, length in zip(
            group.positions.tolist(),
            group.index[:, 0].tolist(),
            group.lengths.tolist(),
            strict=True,
        ):
            txt[pos] = decode_string(words[start : start + length], group.byte_order)
        return 0

    def decode(
        self, data: Sequence[int] | Sequence[bool] | npt.NDArray[Any]
    ) -> tuple[FloatArray, QualityArray]:
        """Decode a response into new arrays aligned with :attr:`tag_ids` (tests, tools)."""
        values = np.empty(self.stop, dtype=np.float64)
        quality = np.empty(self.stop, dtype=np.uint32)
        self.decode_into(data, values, quality)
        return values[self.start :], quality[self.start :]

    def decode_text(
        self, data: Sequence[int] | Sequence[bool] | npt.NDArray[Any]
    ) -> tuple[FloatArray, QualityArray, TextArray]:
        """Like :meth:`decode`, with the text of string tags (``None`` for the others)."""
        values = np.empty(self.stop, dtype=np.float64)
        quality = np.empty(self.stop, dtype=np.uint32)
        texts: TextArray = np.full(self.stop, None, dtype=object)
        self.decode_into(data, values, quality, texts)
        return values[self.start :], quality[self.start :], texts[self.start :]

    def fail_into(self, quality: QualityArray, values: FloatArray, code: int) -> None:
        """Mark every tag of this block with a Bad ``code`` (value NaN)."""
        values[self.start : self.stop] = np.nan
        quality[self.start : self.stop] = code


def _from_payload(payload: bytes, bits: bool) -> npt.NDArray[Any]:
    if bits:
        packed = np.frombuffer(payload, dtype=np.uint8)
        return np.unpackbits(packed, bitorder="little").view(np.bool_)
    if len(payload) % 2:
        raise ValueError("odd number of bytes in a register payload")
    return np.frombuffer(payload, dtype=">u2")


@dataclass(frozen=True, slots=True, eq=False)
class ReadPlan:
    blocks: tuple[ReadBlock, ...]
    tag_ids: npt.NDArray[np.int32]
    """Tag ids in plan order: block ``b`` covers ``tag_ids[b.start:b.stop]``."""

    def __len__(self) -> int:
        return len(self.tag_ids)

    @property
    def registers(self) -> int:
        """Registers and bits read per poll cycle (including bridged gaps)."""
        return sum(b.count for b in self.blocks)

    @property
    def has_text(self) -> bool:
        """True if some tag is a string (its batches need a ``text`` column)."""
        return any(b.has_text for b in self.blocks)


def build_plan(
    tags: Sequence[PlanTag],
    *,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = 8,
) -> ReadPlan:
    """Coalesce tags into read blocks.  Raises ``ValueError`` for impossible layouts."""
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_REGISTERS}")
    if not 1 <= max_bits <= MAX_BITS:
        raise ValueError(f"max_bits must be 1..{MAX_BITS}")
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    for tag in tags:
        bits = tag.kind in BIT_KINDS
        if bits and tag.bit is not None:
            raise ValueError(f"tag {tag.tag_id}: bit applies to registers, not {tag.kind}")
        if tag.bit is not None and not 0 <= tag.bit <= 15:
            raise ValueError(f"tag {tag.tag_id}: bit must be 0..15")
        if bits != (tag.data_type == DataType.BOOL and tag.bit is None):
            raise ValueError(f"tag {tag.tag_id}: {tag.data_type} does not fit a {tag.kind} read")
        limit = max_bits if bits else max_registers
        if tag.width > limit:
            raise ValueError(
                f"tag {tag.tag_id}: a {tag.data_type} needs {tag.width} registers, "
                f"more than max_registers={limit}"
            )
        if tag.data_type == DataType.STRING and not tag.length:
            raise ValueError(f"tag {tag.tag_id}: a string needs a length (registers)")
        if tag.address < 0 or tag.address + tag.width > ADDRESS_SPACE:
            raise ValueError(f"tag {tag.tag_id}: address {tag.address} out of range")

    kind_rank = {kind: i for i, kind in enumerate(RegisterKind)}
    ordered = sorted(tags, key=lambda t: (kind_rank[t.kind], t.address, -t.width, t.tag_id))
    blocks: list[ReadBlock] = []
    i = 0
    while i < len(ordered):
        first = ordered[i]
        limit = max_bits if first.kind in BIT_KINDS else max_registers
        begin, end = first.address, first.address + first.width
        j = i + 1
        while j < len(ordered):
            tag = ordered[j]
            if tag.kind != first.kind:
                break
            new_end = max(end, tag.address + tag.width)
            if tag.address - end > max_gap or new_end - begin > limit:
                break
            end = new_end
            j += 1
        blocks.append(_compile_block(ordered[i:j], begin, end - begin, start=i))
        i = j
    tag_ids = np.array([t.tag_id for t in ordered], dtype=np.int32)
    return ReadPlan(tuple(blocks), tag_ids)


def _compile_block(tags: Sequence[PlanTag], address: int, count: int, start: int) -> ReadBlock:
    kind = tags[0].kind
    groups: dict[tuple[DataType, Order, Order], list[int]] = {}
    for pos, tag in enumerate(tags):
        word_order = (
            Order.BIG if tag.bit is not None or tag.data_type == DataType.STRING else tag.word_order
        )
        groups.setdefault((tag.data_type, word_order, tag.byte_order), []).append(pos)
    compiled: list[DecodeGroup] = []
    for (data_type, word_order, byte_order), positions in groups.items():
        offsets = np.array([tags[p].address - address for p in positions], dtype=np.intp)
        if data_type == DataType.STRING:
            lengths = np.array([tags[p].width for p in positions], dtype=np.intp)
            compiled.append(
                DecodeGroup(
                    data_type,
                    np.array(positions, dtype=np.intp),
                    np.ascontiguousarray(offsets[:, None]),
                    None,
                    None,
                    lengths=lengths,
                    byte_order=byte_order,
                )
            )
            continue
        width = REGISTER_WIDTH[data_type]
        words = np.arange(width, dtype=np.intp)
        if word_order == Order.LITTLE:
            words = words[::-1]
        index = np.ascontiguousarray(offsets[:, None] + words[None, :])
        shifts: npt.NDArray[np.uint16] | None = None
        if kind in BIT_KINDS:
            wire = target = None
        elif data_type == DataType.BOOL:  # bit-in-register
            wire, target = _WIRE[byte_order], None
            shifts = np.array([tags[p].bit or 0 for p in positions], dtype=np.uint16)
        else:
            wire = _WIRE[byte_order]
            target = np.dtype(_TARGET[data_type])
        compiled.append(
            DecodeGroup(data_type, np.array(positions, dtype=np.intp), index, wire, target, shifts)
        )
    ends = np.array([t.address + t.width - address for t in tags], dtype=np.intp)
    return ReadBlock(
        kind=kind,
        address=address,
        count=count,
        start=start,
        stop=start + len(tags),
        tag_ids=np.array([t.tag_id for t in tags], dtype=np.int32),
        ends=ends,
        groups=tuple(compiled),
    )


def plan_tags(
    config: ModbusSourceConfig, tags: Sequence[BoundTag[ModbusTagConfig]]
) -> list[PlanTag]:
    """Resolve each tag's orders against the device defaults of its source."""
    return [
        PlanTag(
            tag_id=t.tag_id,
            kind=t.config.kind,
            address=t.config.address,
            data_type=t.config.data_type,
            word_order=t.config.word_order or config.word_order,
            byte_order=t.config.byte_order or config.byte_order,
            bit=t.config.bit,
            length=t.config.length,
        )
        for t in tags
    ]


def plan_for(config: ModbusSourceConfig, tags: Sequence[BoundTag[ModbusTagConfig]]) -> ReadPlan:
    """The read plan of ``tags`` (all of them, whatever their poll group)."""
    return build_plan(
        plan_tags(config, tags),
        max_registers=config.max_registers,
        max_bits=config.max_bits,
        max_gap=config.max_gap,
    )


def plans_for(
    config: ModbusSourceConfig, tags: Sequence[BoundTag[ModbusTagConfig]]
) -> dict[str | None, ReadPlan]:
    """One read plan per poll group (``None``: tags without ``poll_group``), in the
    order the groups first appear; coalescing happens within a group only."""
    grouped: dict[str | None, list[BoundTag[ModbusTagConfig]]] = {}
    for tag in tags:
        grouped.setdefault(tag.config.poll_group, []).append(tag)
    return {group: plan_for(config, members) for group, members in grouped.items()}


def encode_value(
    data_type: DataType | str,
    value: float | int | bool,
    word_order: Order | str = Order.BIG,
    byte_order: Order | str = Order.BIG,
) -> list[int]:
    """The registers holding ``value`` (for writes and tests); a bool gives ``[0]``/``[1]``.

    Integers must fit the type (``struct.error`` otherwise); float32 rounds.
    """
    data_type = DataType(data_type)
    if data_type == DataType.BOOL:
        return [1 if value else 0]
    fmt = _STRUCT[data_type]
    raw = struct.pack(fmt, value if fmt[-1] in "fd" else int(value))
    words = [raw[k : k + 2] for k in range(0, len(raw), 2)]
    if Order(word_order) == Order.LITTLE:
        words.reverse()
    if Order(byte_order) == Order.LITTLE:
        return [int.from_bytes(w, "little") for w in words]
    return [int.from_bytes(w, "big") for w in words]


def decode_value(
    data_type: DataType | str,
    words: Sequence[int],
    word_order: Order | str = Order.BIG,
    byte_order: Order | str = Order.BIG,
) -> float | int:
    """One value from its registers (the inverse of :func:`encode_value`), exact: an
    integer type gives a Python int (64-bit values beyond 2**53 included), a real a
    float.  ``ValueError`` if there are too few registers."""
    data_type = DataType(data_type)
    if data_type == DataType.BOOL:
        if not words:
            raise ValueError("no register")
        return int(words[0] != 0)
    fmt = _STRUCT[data_type]
    width = REGISTER_WIDTH[data_type]
    if len(words) < width:
        raise ValueError(f"{len(words)} register(s), {data_type.value} needs {width}")
    little = Order(byte_order) == Order.LITTLE
    parts = [int(w).to_bytes(2, "little" if little else "big") for w in words[:width]]
    if Order(word_order) == Order.LITTLE:
        parts.reverse()
    value: float | int = struct.unpack(fmt, b"".join(parts))[0]
    return value
