"""Property tests of the Modbus read plan: round trips against ``struct``, limits, fuzz."""

from __future__ import annotations

import itertools
import math
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.connectors.modbus.config import REGISTER_WIDTH, Order, RegisterKind
from isthmus.connectors.modbus.decode import PlanTag, ReadPlan, build_plan
from isthmus.model.config import DataType
from isthmus.model.quality import Quality

REGISTER_TYPES = [d for d in DataType if d not in (DataType.BOOL, DataType.STRING)]
FORMATS = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
BITS = {"h": 16, "H": 16, "i": 32, "I": 32, "q": 64, "Q": 64}


def reference_registers(dt: DataType, raw: bytes, word: Order, byte: Order) -> list[int]:
    """Independent of the encoder: big-endian bytes, then reorder words and bytes."""
    words = [raw[k : k + 2] for k in range(0, len(raw), 2)]
    if word == Order.LITTLE:
        words.reverse()
    return [int.from_bytes(w, "little" if byte == Order.LITTLE else "big") for w in words]


@st.composite
def sample(draw: st.DrawFn, dt: DataType) -> tuple[bytes, float]:
    """Big-endian bytes of a random value of ``dt`` and the float64 we expect back."""
    fmt = FORMATS[dt]
    if fmt in "fd":
        raw = draw(st.binary(min_size=struct.calcsize(fmt), max_size=struct.calcsize(fmt)))
        (value,) = struct.unpack(">" + fmt, raw)
        return raw, float(value)
    bits = BITS[fmt]
    signed = fmt.islower()
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    value = draw(st.integers(lo, hi))
    return struct.pack(">" + fmt, value), float(value)


@st.composite
def layouts(
    draw: st.DrawFn,
) -> tuple[list[PlanTag], dict[RegisterKind, dict[int, int]], dict[int, float], int, int, int]:
    """Non-overlapping tags over registers and bits, their memory, expected values."""
    max_registers = draw(st.integers(4, 125))
    max_bits = draw(st.integers(1, 2000))
    max_gap = draw(st.integers(0, 20))
    tags: list[PlanTag] = []
    memory: dict[RegisterKind, dict[int, int]] = {k: {} for k in RegisterKind}
    expected: dict[int, float] = {}
    n = draw(st.integers(1, 60))
    cursor = {k: draw(st.integers(0, 500)) for k in RegisterKind}
    for tag_id in range(n):
        kind = draw(st.sampled_from(list(RegisterKind)))
        address = cursor[kind] + draw(st.integers(0, 30))
        if kind in (RegisterKind.COIL, RegisterKind.DISCRETE):
            bit = draw(st.booleans())
            tags.append(PlanTag(tag_id, kind, address, DataType.BOOL))
            memory[kind][address] = int(bit)
            expected[tag_id] = float(bit)
            cursor[kind] = address + 1
            continue
        dt = draw(st.sampled_from(REGISTER_TYPES))
        word = draw(st.sampled_from(list(Order)))
        byte = draw(st.sampled_from(list(Order)))
        raw, value = draw(sample(dt))
        for k, reg in enumerate(reference_registers(dt, raw, word, byte)):
            memory[kind][address + k] = reg
        tags.append(PlanTag(tag_id, kind, address, dt, word, byte))
        expected[tag_id] = value
        cursor[kind] = address + REGISTER_WIDTH[dt]
    order = draw(st.permutations(tags))
    return list(order), memory, expected, max_registers, max_bits, max_gap


def check_limits(plan: ReadPlan, tags: list[PlanTag], max_registers: int, max_bits: int) -> None:
    by_id = {t.tag_id: t for t in tags}
    assert sorted(plan.tag_ids.tolist()) == sorted(by_id)  # every tag exactly once
    covered = 0
    for block in plan.blocks:
        limit = max_bits if block.is_bits else max_registers
        assert 1 <= block.count <= limit
        assert block.start == covered
        covered = block.stop
        for tag_id in block.tag_ids.tolist():
            tag = by_id[tag_id]
            assert tag.kind == block.kind
            assert block.address <= tag.address
            assert tag.address + tag.width <= block.end  # never split
    assert covered == len(tags)
    for kind in RegisterKind:
        spans = sorted((b.address, b.end) for b in plan.blocks if b.kind == kind)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start  # blocks of a kind don't overlap


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_decode_round_trip_and_limits(
    layout: tuple[
        list[PlanTag], dict[RegisterKind, dict[int, int]], dict[int, float], int, int, int
    ],
) -> None:
    tags, memory, expected, max_registers, max_bits, max_gap = layout
    plan = build_plan(tags, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
    check_limits(plan, tags, max_registers, max_bits)
    values = np.empty(len(plan))
    quality = np.empty(len(plan), dtype=np.uint32)
    for block in plan.blocks:
        mem = memory[block.kind]
        data: list[int] | list[bool]
        if block.is_bits:
            data = [bool(mem.get(a, 0)) for a in range(block.address, block.end)]
        else:
            data = [mem.get(a, 0xA5A5) for a in range(block.address, block.end)]
        block.decode_into(data, values, quality)
        # the wire payload (registers big-endian, bits packed LSB first) decodes alike
        if block.is_bits:
            payload = np.packbits(np.array(data, dtype=bool), bitorder="little").tobytes()
        else:
            payload = np.array(data, dtype=">u2").tobytes()
        from_bytes = np.empty_like(values)
        block.decode_into(payload, from_bytes, quality)
        assert np.array_equal(
            from_bytes[block.start : block.stop], values[block.start : block.stop], equal_nan=True
        )
    assert not quality.any()
    for tag_id, got in zip(plan.tag_ids.tolist(), values.tolist(), strict=True):
        want = expected[tag_id]
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == want, (tag_id, got, want)


@settings(max_examples=100, deadline=None)
@given(layouts(), st.data())
def test_random_responses_never_crash(
    layout: tuple[
        list[PlanTag], dict[RegisterKind, dict[int, int]], dict[int, float], int, int, int
    ],
    data: st.DataObject,
) -> None:
    tags, _, _, max_registers, max_bits, max_gap = layout
    plan = build_plan(tags, max_registers=max_registers, max_bits=max_bits, max_gap=max_gap)
    values = np.empty(len(plan))
    quality = np.empty(len(plan), dtype=np.uint32)
    for block in plan.blocks:
        length = data.draw(st.integers(0, block.count + 3))
        response = data.draw(
            st.one_of(
                st.lists(st.integers(0, 0xFFFF), min_size=length, max_size=length),
                st.lists(st.integers(-(2**70), 2**70), min_size=length, max_size=length),
                st.lists(st.booleans(), min_size=length, max_size=length),
                st.binary(max_size=2 * block.count + 3),
            )
        )
        good = block.decode_into(response, values, quality)
        q = quality[block.start : block.stop]
        assert good == int(np.count_nonzero(q == Quality.GOOD))
        assert set(q.tolist()) <= {Quality.GOOD, Quality.BAD_DECODING_ERROR}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20),
    st.lists(
        st.tuples(st.integers(0, 19), st.integers(0, 15), st.sampled_from(list(Order))),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([True, False]),
)
def test_bits_in_registers_match_a_shift(
    memory: list[int], picks: list[tuple[int, int, Order]], as_payload: bool
) -> None:
    """Bit ``b`` of register ``r`` is ``(value >> b) & 1``, the value taken in the tag's
    byte order; mixed with a uint16 of each register in the same block."""
    picks = [(r % len(memory), b, o) for r, b, o in picks]
    tags = [
        PlanTag(i, RegisterKind.HOLDING, r, DataType.BOOL, byte_order=o, bit=b)
        for i, (r, b, o) in enumerate(picks)
    ]
    tags += [
        PlanTag(1000 + r, RegisterKind.HOLDING, r, DataType.UINT16) for r in range(len(memory))
    ]
    plan = build_plan(tags, max_gap=0)
    assert len(plan.blocks) == 1
    block = plan.blocks[0]
    data = struct.pack(f">{len(memory)}H", *memory) if as_payload else memory
    values, quality = block.decode(data)
    assert not quality.any()
    got = dict(zip(block.tag_ids.tolist(), values.tolist(), strict=True))
    for i, (r, b, o) in enumerate(picks):
        word = memory[r] if o == Order.BIG else int.from_bytes(memory[r].to_bytes(2, "little"))
        assert got[i] == (word >> b) & 1
    for r, word in enumerate(memory):
        assert got[1000 + r] == word
